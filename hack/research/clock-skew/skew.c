/* RESEARCH PROTOTYPE (issue 23, clock-skew): shift CLOCK_REALTIME for one running process by patching its vDSO.
 *
 *   skew apply   PID OFFSET_S DURATION_S   patch, hold, restore (on the duration's end or TERM/INT/HUP)
 *   skew inject  PID OFFSET_S DURATION_S   patch and exit (the patch stops adding the offset by itself at the deadline)
 *   skew restore PID                       put the original vDSO bytes back (copied from this process's own vDSO)
 *   skew status  PID                       say whether PID's vDSO differs from ours
 *
 * How: the tracer stops every thread of PID (PTRACE_SEIZE + PTRACE_INTERRUPT), makes sure no thread is executing
 * inside the vDSO (else lets them run 1 ms and retries), overwrites __vdso_clock_gettime, __vdso_gettimeofday and
 * __vdso_time in place (PTRACE_POKEDATA: copy-on-write of that process's vDSO page only) with code that makes the
 * real system call and adds OFFSET to the seconds of CLOCK_REALTIME(_COARSE) until the real time passes DEADLINE,
 * then detaches. The original bytes need no saving: every process on the same kernel maps the same vDSO image,
 * so the tracer's own vDSO is the reference (and a target whose vDSO is not the reference is refused). x86-64 only.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_MARK 0x1111111111111111ULL
#define OFFSET_MARK 0x2222222222222222ULL
/* patch.S assembled (as + objcopy): cg = clock_gettime, gtod = gettimeofday, tm = time */
static const unsigned char CG[] = {0xb8,0xe4,0,0,0,0x0f,0x05,0x48,0x85,0xc0,0x75,0x28,0x83,0xff,0x00,0x74,0x05,0x83,0xff,
  0x05,0x75,0x1c,0x48,0xba,0x11,0x11,0x11,0x11,0x11,0x11,0x11,0x11,0x48,0x39,0x16,0x7d,0x0d,0x48,0xba,0x22,0x22,0x22,
  0x22,0x22,0x22,0x22,0x22,0x48,0x01,0x16,0x31,0xc0,0xc3};
static const unsigned char GTOD[] = {0xb8,0x60,0,0,0,0x0f,0x05,0x48,0x85,0xc0,0x75,0x23,0x48,0x85,0xff,0x74,0x1c,0x48,
  0xba,0x11,0x11,0x11,0x11,0x11,0x11,0x11,0x11,0x48,0x39,0x17,0x7d,0x0d,0x48,0xba,0x22,0x22,0x22,0x22,0x22,0x22,0x22,
  0x22,0x48,0x01,0x17,0x31,0xc0,0xc3};
static const unsigned char TM[] = {0x48,0x89,0xfe,0x31,0xff,0xb8,0xc9,0,0,0,0x0f,0x05,0x48,0xba,0x11,0x11,0x11,0x11,
  0x11,0x11,0x11,0x11,0x48,0x39,0xd0,0x7d,0x0d,0x48,0xba,0x22,0x22,0x22,0x22,0x22,0x22,0x22,0x22,0x48,0x01,0xd0,0x48,
  0x85,0xf6,0x74,0x03,0x48,0x89,0x06,0xc3};
/* __vdso_time is only 40 bytes: its code goes after clock_gettime's (902 bytes) and __vdso_time jumps there */
#define TM_AT 64
static unsigned char CG_TM[TM_AT + sizeof TM];
static unsigned char JMP_TM[5] = {0xe9};
static struct { const char *sym; const unsigned char *code; size_t len; } PATCHES[] = {
  {"__vdso_clock_gettime", CG_TM, sizeof CG_TM}, {"__vdso_gettimeofday", GTOD, sizeof GTOD},
  {"__vdso_time", JMP_TM, sizeof JMP_TM}};
#define NPATCH (sizeof PATCHES / sizeof PATCHES[0])

static void die(const char *what) { fprintf(stderr, "skew: %s: %s\n", what, strerror(errno)); exit(2); }
static void fail(const char *msg) { fprintf(stderr, "skew: %s\n", msg); exit(2); }

/* our own vDSO: base, size, and each patched symbol's offset and size */
static unsigned char *own; static size_t vdso_size; static size_t sym_off[NPATCH];

static int vdso_range(pid_t pid, uint64_t *start, uint64_t *end) {
  char path[64], line[512];
  snprintf(path, sizeof path, "/proc/%d/maps", pid);
  FILE *f = fopen(path, "r");
  if (!f) die(path);
  int found = 0;
  while (fgets(line, sizeof line, f))
    if (strstr(line, "[vdso]")) { sscanf(line, "%lx-%lx", start, end); found = 1; }
  fclose(f);
  return found;
}

static void load_own_vdso(void) {
  uint64_t s, e;
  own = (unsigned char *)getauxval(AT_SYSINFO_EHDR);
  if (!own || !vdso_range(getpid(), &s, &e) || s != (uint64_t)own) fail("no vDSO in this process");
  vdso_size = e - s;
  Elf64_Ehdr *eh = (Elf64_Ehdr *)own;
  Elf64_Shdr *sh = (Elf64_Shdr *)(own + eh->e_shoff);
  for (int i = 0; i < eh->e_shnum; i++) {
    if (sh[i].sh_type != SHT_DYNSYM) continue;
    Elf64_Sym *sym = (Elf64_Sym *)(own + sh[i].sh_offset);
    const char *str = (const char *)(own + sh[sh[i].sh_link].sh_offset);
    for (size_t k = 0; k < sh[i].sh_size / sizeof *sym; k++)
      for (size_t p = 0; p < NPATCH; p++)
        if (!strcmp(str + sym[k].st_name, PATCHES[p].sym)) {
          if (sym[k].st_size < PATCHES[p].len) fail("a vDSO function is smaller than its patch");
          sym_off[p] = sym[k].st_value;
        }
  }
  for (size_t p = 0; p < NPATCH; p++) if (!sym_off[p]) fail("vDSO symbol not found");
  memset(CG_TM, 0xcc, sizeof CG_TM);  /* int3 between the two */
  memcpy(CG_TM, CG, sizeof CG);
  memcpy(CG_TM + TM_AT, TM, sizeof TM);
  int32_t rel = (int32_t)((int64_t)(sym_off[0] + TM_AT) - (int64_t)(sym_off[2] + sizeof JMP_TM));
  memcpy(JMP_TM + 1, &rel, 4);
}

static pid_t tids[4096]; static int pending[4096]; static int ntids;

static int seized(pid_t t) { for (int i = 0; i < ntids; i++) if (tids[i] == t) return 1; return 0; }

static void detach_all(void) {
  for (int i = 0; i < ntids; i++) ptrace(PTRACE_DETACH, tids[i], 0, (void *)(long)pending[i]);
  ntids = 0;
}

/* single-step thread i until it leaves [lo, hi): a thread in clock_gettime returns to its caller within a few
   hundred instructions; a signal that arrives meanwhile is held back and delivered at detach */
static int step_out(int i, uint64_t lo, uint64_t hi) {
  for (int n = 0; n < 100000; n++) {
    struct user_regs_struct r;
    if (ptrace(PTRACE_GETREGS, tids[i], 0, &r) == -1) die("PTRACE_GETREGS");
    if (r.rip < lo || r.rip >= hi) return 1;
    if (ptrace(PTRACE_SINGLESTEP, tids[i], 0, 0) == -1) die("PTRACE_SINGLESTEP");
    int st; if (waitpid(tids[i], &st, __WALL) == -1) die("waitpid");
    if (!WIFSTOPPED(st)) return 0;  /* the thread exited */
    if (WSTOPSIG(st) != SIGTRAP) pending[i] = WSTOPSIG(st);
  }
  return 0;
}

/* stop every thread; 1 if none is inside [lo, hi) */
static int stop_all(pid_t pid, uint64_t lo, uint64_t hi) {
  char path[64]; int added;
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  do {  /* threads created while we seize: list again until nothing new */
    added = 0;
    DIR *d = opendir(path);
    if (!d) die(path);
    struct dirent *de;
    while ((de = readdir(d))) {
      pid_t t = atoi(de->d_name);
      if (t <= 0 || seized(t)) continue;
      if (ptrace(PTRACE_SEIZE, t, 0, 0) == -1) { if (errno == ESRCH) continue; die("PTRACE_SEIZE"); }
      pending[ntids] = 0; tids[ntids++] = t; added = 1;
      if (ptrace(PTRACE_INTERRUPT, t, 0, 0) == -1) die("PTRACE_INTERRUPT");
      int st; if (waitpid(t, &st, __WALL) == -1) die("waitpid");
    }
    closedir(d);
  } while (added);
  for (int i = 0; i < ntids; i++) {
    struct user_regs_struct r;
    if (ptrace(PTRACE_GETREGS, tids[i], 0, &r) == -1) die("PTRACE_GETREGS");
    if (r.rip >= lo && r.rip < hi && !step_out(i, lo, hi)) return 0;
  }
  return 1;
}

static void poke(pid_t pid, uint64_t addr, const unsigned char *src, size_t len) {
  for (size_t i = 0; i < len; i += 8) {  /* word-wise read-modify-write; the vDSO's end is page aligned */
    errno = 0;
    long w = ptrace(PTRACE_PEEKDATA, pid, addr + i, 0);
    if (errno) die("PTRACE_PEEKDATA");
    memcpy(&w, src + i, len - i < 8 ? len - i : 8);
    if (ptrace(PTRACE_POKEDATA, pid, addr + i, w) == -1) die("PTRACE_POKEDATA");
  }
}

static int read_target(pid_t pid, uint64_t start, unsigned char *buf) {
  char path[64]; snprintf(path, sizeof path, "/proc/%d/mem", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) die(path);
  ssize_t n = pread(fd, buf, vdso_size, (off_t)start);
  close(fd);
  if (n != (ssize_t)vdso_size) die("read target vDSO");
  return 0;
}

/* read the target's vDSO while attached: PTRACE_PEEKDATA needs only the ptrace right, whereas opening
   /proc/PID/mem (mode 0600, owned by the target's uid) also needs DAC_OVERRIDE when the uids differ */
static void peek_target(pid_t tid, uint64_t start, unsigned char *buf) {
  for (size_t i = 0; i < vdso_size; i += 8) {
    errno = 0;
    long w = ptrace(PTRACE_PEEKDATA, tid, start + i, 0);
    if (errno) die("PTRACE_PEEKDATA");
    memcpy(buf + i, &w, 8);
  }
}

/* write the patches (or the originals when offset == NULL) with every thread stopped outside the vDSO */
static void rewrite(pid_t pid, const int64_t *offset, int64_t deadline) {
  uint64_t start, end;
  if (!vdso_range(pid, &start, &end)) fail("target has no vDSO");
  if (end - start != vdso_size) fail("target's vDSO is not this kernel's image");
  int tries = 0;
  while (!stop_all(pid, start, end)) {
    detach_all();
    if (++tries == 1000) fail("a thread stayed inside the vDSO for 1000 tries");
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  unsigned char *cur = malloc(vdso_size);
  peek_target(tids[0], start, cur);
  for (size_t p = 0; p < NPATCH; p++) {
    const unsigned char *orig = own + sym_off[p];
    if (offset) {
      if (memcmp(cur + sym_off[p], orig, PATCHES[p].len)) { detach_all(); fail("target's vDSO is already patched"); }
      unsigned char code[sizeof CG_TM];
      memcpy(code, PATCHES[p].code, PATCHES[p].len);
      for (size_t i = 0; i + 8 <= PATCHES[p].len; i++) {
        uint64_t v; memcpy(&v, code + i, 8);
        if (v == DEADLINE_MARK) memcpy(code + i, &deadline, 8);
        if (v == OFFSET_MARK) memcpy(code + i, offset, 8);
      }
      poke(pid, start + sym_off[p], code, PATCHES[p].len);
    } else {
      poke(pid, start + sym_off[p], orig, PATCHES[p].len);
    }
  }
  peek_target(tids[0], start, cur);
  int same = !memcmp(cur, own, vdso_size);
  detach_all();
  free(cur);
  if (!offset && !same) fail("restore: target's vDSO still differs");
  fprintf(stderr, "skew: pid %d %s (tries %d)\n", pid, offset ? "patched" : "restored", tries + 1);
}

static volatile sig_atomic_t stop;
static void on_signal(int s) { stop = s; }

int main(int argc, char **argv) {
  if (argc < 3) fail("usage: skew apply|inject PID OFFSET_S DURATION_S | restore|status PID");
  load_own_vdso();
  pid_t pid = atoi(argv[2]);
  if (!strcmp(argv[1], "status")) {
    uint64_t s, e; unsigned char *cur = malloc(vdso_size);
    if (!vdso_range(pid, &s, &e)) fail("target has no vDSO");
    read_target(pid, s, cur);
    printf("pid %d vDSO %s\n", pid, memcmp(cur, own, vdso_size) ? "PATCHED" : "original");
    return 0;
  }
  if (!strcmp(argv[1], "restore")) { rewrite(pid, NULL, 0); return 0; }
  if (argc < 5) fail("apply/inject need OFFSET_S DURATION_S");
  int64_t offset = atoll(argv[3]), duration = atoll(argv[4]);
  int64_t deadline = (int64_t)time(NULL) + duration + 5;  /* self-expiry, 5 s after the hold would end */
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL); sigaction(SIGINT, &sa, NULL); sigaction(SIGHUP, &sa, NULL);
  rewrite(pid, &offset, deadline);
  if (!strcmp(argv[1], "inject")) return 0;
  fprintf(stderr, "skew: holding %llds\n", (long long)duration);
  struct timespec until; clock_gettime(CLOCK_MONOTONIC, &until); until.tv_sec += duration;
  while (!stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {}
  rewrite(pid, NULL, 0);
  return stop ? 128 + stop : 0;
}
