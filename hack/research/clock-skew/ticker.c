/* Target: prints clock_gettime(CLOCK_REALTIME), gettimeofday and time() every 500 ms; -t N adds N busy threads
   that call clock_gettime in a loop (to exercise patching while threads run in the vDSO). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
static void *spin(void *arg) {
  (void)arg;
  struct timespec ts;
  for (;;) clock_gettime(CLOCK_REALTIME, &ts);
  return NULL;
}
int main(int argc, char **argv) {
  int threads = (argc > 2 && !strcmp(argv[1], "-t")) ? atoi(argv[2]) : 0;
  for (int i = 0; i < threads; i++) { pthread_t t; pthread_create(&t, NULL, spin, NULL); }
  for (;;) {
    struct timespec ts; struct timeval tv; char buf[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gettimeofday(&tv, NULL);
    time_t t = time(NULL);
    strftime(buf, sizeof buf, "%F %T", gmtime(&ts.tv_sec));
    printf("ticker pid=%d clock_gettime=%s gettimeofday=%ld time=%ld\n", getpid(), buf, (long)tv.tv_sec, (long)t);
    fflush(stdout);
    usleep(500000);
  }
}
