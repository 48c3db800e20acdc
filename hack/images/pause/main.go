// Command pause is the pod sandbox process of the local cluster's nodes (the image test-coordinator-pause).
//
// It holds the pod's namespaces open and does nothing else: it reaps the orphans that end up as its children
// (it is PID 1 of the pod when the PID namespace is shared), exits 0 on SIGINT or SIGTERM, and otherwise blocks
// forever. Standard library only, built static (CGO_ENABLED=0) and run FROM scratch.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const version = "3.10"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Printf("pause %s (test-coordinator)\n", version)
		return
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every child that has exited; SIGCHLD signals coalesce, so one may stand for several.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
