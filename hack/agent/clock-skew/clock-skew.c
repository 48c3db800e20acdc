/* coordinator-clock-skew: the tracer of the clock-skew in-pod fault (docs/inpod-faults.md "clock-skew").
 *
 *   coordinator-clock-skew apply OFFSET_S EXPIRE_AFTER_S TARGET TAG   patch every process of TARGET, verify, exit
 *   coordinator-clock-skew restore TARGET [TAG]   put the original vDSO code back (only TAG's patch, when given)
 *   coordinator-clock-skew status TARGET          one line per process: original, skewed, expired, other
 *
 * TARGET is container:<container ID> (every process whose /proc/PID/cgroup names that ID: the agent joins the
 * target container's PID namespace) or pid:<PID>[,<PID>...]. TAG (16 hex digits, from the fault's id) is written
 * into the patch, so a late restore of one fault never removes another fault's skew.
 *
 * How: the tracer stops every thread of a process (PTRACE_SEIZE + PTRACE_INTERRUPT), single-steps any thread that
 * is executing inside the vDSO until it leaves it, overwrites __vdso_clock_gettime, __vdso_gettimeofday and
 * __vdso_time in place with PTRACE_POKEDATA (copy-on-write of that process's vDSO page only), reads the bytes back
 * and detaches. The new code (patch.S) makes the real system call and adds OFFSET seconds to CLOCK_REALTIME and
 * CLOCK_REALTIME_COARSE while the real time is before the patch's own deadline (now + EXPIRE_AFTER_S): the dead
 * man's switch, so a skew ends even if nobody ever restores it. The original bytes need no saving: every process
 * on one kernel maps the same vDSO image, so this process's own vDSO is the reference.
 *
 * Exit status: 0 done; 2 not applied (reason on stderr; whatever was patched has been restored); 4 a restore
 * failed. Every line starts with "coordinator-clock-skew:". x86-64 only: elsewhere it refuses with a reason.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#define EXIT_NOT_APPLIED 2
#define EXIT_RESTORE_FAILED 4

#if !defined(__x86_64__)
int main(void) {
  struct utsname u;
  uname(&u);
  fprintf(stderr, "coordinator-clock-skew: clock-skew patches x86-64 machine code; this node is %s\n", u.machine);
  return EXIT_NOT_APPLIED;
}
#else
#include <dirent.h>
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_MARK 0x1111111111111111ULL
#define OFFSET_MARK 0x2222222222222222ULL
#define MAX_THREADS 8192
#define MAX_PIDS 4096

/* patch.S assembled (as + objdump): CG = clock_gettime, GTOD = gettimeofday, TM = time */
static const unsigned char CG[] = {0xb8,0xe4,0,0,0,0x0f,0x05,0x48,0x85,0xc0,0x75,0x28,0x83,0xff,0x00,0x74,0x05,0x83,0xff,
  0x05,0x75,0x1c,0x48,0xba,0x11,0x11,0x11,0x11,0x11,0x11,0x11,0x11,0x48,0x39,0x16,0x7d,0x0d,0x48,0xba,0x22,0x22,0x22,
  0x22,0x22,0x22,0x22,0x22,0x48,0x01,0x16,0x31,0xc0,0xc3};
static const unsigned char GTOD[] = {0xb8,0x60,0,0,0,0x0f,0x05,0x48,0x85,0xc0,0x75,0x23,0x48,0x85,0xff,0x74,0x1c,0x48,
  0xba,0x11,0x11,0x11,0x11,0x11,0x11,0x11,0x11,0x48,0x39,0x17,0x7d,0x0d,0x48,0xba,0x22,0x22,0x22,0x22,0x22,0x22,0x22,
  0x22,0x48,0x01,0x17,0x31,0xc0,0xc3};
static const unsigned char TM[] = {0x48,0x89,0xfe,0x31,0xff,0xb8,0xc9,0,0,0,0x0f,0x05,0x48,0xba,0x11,0x11,0x11,0x11,
  0x11,0x11,0x11,0x11,0x48,0x39,0xd0,0x7d,0x0d,0x48,0xba,0x22,0x22,0x22,0x22,0x22,0x22,0x22,0x22,0x48,0x01,0xd0,0x48,
  0x85,0xf6,0x74,0x03,0x48,0x89,0x06,0xc3};
/* __vdso_time is only 40 bytes on the kernels seen: its code goes after clock_gettime's, and __vdso_time jumps there */
#define TM_AT 64
/* the patch's tag sits in the padding after clock_gettime's ret (never executed) */
#define TAG_AT 56
static unsigned char CG_TM[TM_AT + sizeof TM];
static unsigned char JMP_TM[5] = {0xe9};
static struct { const char *sym; const unsigned char *code; size_t len; } PATCHES[] = {
  {"__vdso_clock_gettime", CG_TM, sizeof CG_TM}, {"__vdso_gettimeofday", GTOD, sizeof GTOD},
  {"__vdso_time", JMP_TM, sizeof JMP_TM}};
#define NPATCH (sizeof PATCHES / sizeof PATCHES[0])

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("coordinator-clock-skew: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* A failure of one process: the message, and whether the process simply went away meanwhile. */
static char why[512];
static int vanished;
static int failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int failed(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  return -1;
}
static int failed_errno(pid_t pid, const char *what) {
  int e = errno;
  if (e == ESRCH || e == ENOENT) { vanished = 1; return failed("pid %d exited", pid); }
  if (e == EPERM || e == EACCES)
    return failed("pid %d: %s: %s: the agent needs the SYS_PTRACE capability (Pod Security baseline does not allow it: "
                  "label the namespace privileged or exempt the operator)", pid, what, strerror(e));
  return failed("pid %d: %s: %s", pid, what, strerror(e));
}

/* our own vDSO: base, size, and each patched symbol's offset */
static unsigned char *own;
static size_t vdso_size;
static size_t sym_off[NPATCH];

static int vdso_range(pid_t pid, uint64_t *start, uint64_t *end) {
  char path[64], line[512];
  snprintf(path, sizeof path, "/proc/%d/maps", pid);
  FILE *f = fopen(path, "r");
  if (!f) return failed_errno(pid, "read /proc/PID/maps");
  int found = 0;
  while (fgets(line, sizeof line, f))
    if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", start, end) == 2) found = 1;
  fclose(f);
  return found ? 0 : failed("pid %d has no vDSO", pid);
}

static void load_own_vdso(void) {
  uint64_t s, e;
  own = (unsigned char *)getauxval(AT_SYSINFO_EHDR);
  if (!own || vdso_range(getpid(), &s, &e) || s != (uint64_t)own) { say("no vDSO in this process"); exit(EXIT_NOT_APPLIED); }
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
          if (sym[k].st_size < PATCHES[p].len) { say("this kernel's %s is smaller than its patch", PATCHES[p].sym); exit(EXIT_NOT_APPLIED); }
          sym_off[p] = sym[k].st_value;
        }
  }
  for (size_t p = 0; p < NPATCH; p++)
    if (!sym_off[p]) { say("this kernel's vDSO has no %s", PATCHES[p].sym); exit(EXIT_NOT_APPLIED); }
  memset(CG_TM, 0xcc, sizeof CG_TM); /* int3 between the two */
  memcpy(CG_TM, CG, sizeof CG);
  memcpy(CG_TM + TM_AT, TM, sizeof TM);
  int32_t rel = (int32_t)((int64_t)(sym_off[0] + TM_AT) - (int64_t)(sym_off[2] + sizeof JMP_TM));
  memcpy(JMP_TM + 1, &rel, 4);
}

/* the patch of symbol p with its immediates (and, in clock_gettime's, the tag) filled in */
static void patch_code(size_t p, int64_t offset, int64_t deadline, uint64_t tag, unsigned char *code) {
  memcpy(code, PATCHES[p].code, PATCHES[p].len);
  if (p == 0) memcpy(code + TAG_AT, &tag, 8);
  for (size_t i = 0; i + 8 <= PATCHES[p].len; i++) {
    uint64_t v;
    memcpy(&v, code + i, 8);
    if (v == DEADLINE_MARK) memcpy(code + i, &deadline, 8);
    if (v == OFFSET_MARK) memcpy(code + i, &offset, 8);
  }
}

enum state { ORIGINAL, SKEWED, OTHER };

/* what cur (a process's vDSO) holds: the originals, our patch (its offset and deadline), or something else */
static enum state state_of(const unsigned char *cur, int64_t *offset, int64_t *deadline, uint64_t *tag) {
  int original = 1;
  for (size_t p = 0; p < NPATCH; p++)
    if (memcmp(cur + sym_off[p], own + sym_off[p], PATCHES[p].len)) original = 0;
  if (original) return ORIGINAL;
  /* clock_gettime's patch carries the deadline at byte 24 and the offset at byte 39 (patch.S: movabs rdx, imm64) */
  memcpy(deadline, cur + sym_off[0] + 24, 8);
  memcpy(offset, cur + sym_off[0] + 39, 8);
  memcpy(tag, cur + sym_off[0] + TAG_AT, 8);
  for (size_t p = 0; p < NPATCH; p++) {
    unsigned char code[sizeof CG_TM];
    patch_code(p, *offset, *deadline, *tag, code);
    if (memcmp(cur + sym_off[p], code, PATCHES[p].len)) return OTHER;
  }
  return SKEWED;
}

static pid_t tids[MAX_THREADS];
static int pending[MAX_THREADS];
static int ntids;

static int seized(pid_t t) {
  for (int i = 0; i < ntids; i++)
    if (tids[i] == t) return 1;
  return 0;
}

static void detach_all(void) {
  for (int i = 0; i < ntids; i++) ptrace(PTRACE_DETACH, tids[i], 0, (void *)(long)pending[i]);
  ntids = 0;
}

/* single-step thread i until it leaves [lo, hi): a thread in clock_gettime returns to its caller within a few
   hundred instructions; a signal that arrives meanwhile is held back and delivered at detach. 1: out; 0: not yet
   (or the thread exited); -1: error */
static int step_out(pid_t pid, int i, uint64_t lo, uint64_t hi) {
  for (int n = 0; n < 100000; n++) {
    struct user_regs_struct r;
    if (ptrace(PTRACE_GETREGS, tids[i], 0, &r) == -1) return failed_errno(pid, "PTRACE_GETREGS");
    if (r.rip < lo || r.rip >= hi) return 1;
    if (ptrace(PTRACE_SINGLESTEP, tids[i], 0, 0) == -1) return failed_errno(pid, "PTRACE_SINGLESTEP");
    int st;
    if (waitpid(tids[i], &st, __WALL) == -1) return failed_errno(pid, "waitpid");
    if (!WIFSTOPPED(st)) return 0;
    if (WSTOPSIG(st) != SIGTRAP) pending[i] = WSTOPSIG(st);
  }
  return 0;
}

/* stop every thread of pid; 1 if none is inside [lo, hi), 0 if one is, -1 on error */
static int stop_all(pid_t pid, uint64_t lo, uint64_t hi) {
  char path[64];
  int added;
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  do { /* threads created while we seize: list again until nothing new */
    added = 0;
    DIR *d = opendir(path);
    if (!d) return failed_errno(pid, "list /proc/PID/task");
    struct dirent *de;
    while ((de = readdir(d))) {
      pid_t t = atoi(de->d_name);
      if (t <= 0 || seized(t)) continue;
      if (ntids == MAX_THREADS) { closedir(d); return failed("pid %d has more than %d threads", pid, MAX_THREADS); }
      if (ptrace(PTRACE_SEIZE, t, 0, 0) == -1) {
        if (errno == ESRCH) continue;
        closedir(d);
        return failed_errno(pid, "PTRACE_SEIZE");
      }
      pending[ntids] = 0;
      tids[ntids++] = t;
      added = 1;
      int st;
      if (ptrace(PTRACE_INTERRUPT, t, 0, 0) == -1 || waitpid(t, &st, __WALL) == -1) {
        closedir(d);
        return failed_errno(pid, "PTRACE_INTERRUPT");
      }
    }
    closedir(d);
  } while (added);
  for (int i = 0; i < ntids; i++) {
    struct user_regs_struct r;
    if (ptrace(PTRACE_GETREGS, tids[i], 0, &r) == -1) return failed_errno(pid, "PTRACE_GETREGS");
    if (r.rip >= lo && r.rip < hi) {
      int out = step_out(pid, i, lo, hi);
      if (out <= 0) return out;
    }
  }
  return 1;
}

static int poke(pid_t pid, uint64_t addr, const unsigned char *src, size_t len) {
  for (size_t i = 0; i < len; i += 8) { /* word-wise read-modify-write; the vDSO's end is page aligned */
    errno = 0;
    long w = ptrace(PTRACE_PEEKDATA, tids[0], addr + i, 0);
    if (errno) return failed_errno(pid, "PTRACE_PEEKDATA");
    memcpy(&w, src + i, len - i < 8 ? len - i : 8);
    if (ptrace(PTRACE_POKEDATA, tids[0], addr + i, w) == -1) return failed_errno(pid, "PTRACE_POKEDATA");
  }
  return 0;
}

/* read a process's vDSO while attached: PTRACE_PEEKDATA needs only the ptrace right, whereas opening /proc/PID/mem
   (mode 0600, owned by the target's uid) also needs DAC_OVERRIDE when the uids differ */
static int peek(pid_t pid, uint64_t start, unsigned char *buf) {
  for (size_t i = 0; i < vdso_size; i += 8) {
    errno = 0;
    long w = ptrace(PTRACE_PEEKDATA, tids[0], start + i, 0);
    if (errno) return failed_errno(pid, "PTRACE_PEEKDATA");
    memcpy(buf + i, &w, 8);
  }
  return 0;
}

enum action { APPLY, RESTORE, STATUS };
static int restored; /* processes whose code a restore wrote back */

/* Apply, restore or report one process with every thread stopped outside the vDSO. Returns the state the process
   is in afterwards (applied and restored: verified by reading the bytes back), or -1 (message in why). */
static int act(pid_t pid, enum action action, int64_t offset, int64_t deadline, uint64_t tag, int any_tag,
               unsigned char *cur) {
  uint64_t start, end;
  vanished = 0;
  if (vdso_range(pid, &start, &end)) return -1;
  if (end - start != vdso_size) return failed("pid %d: its vDSO is not this kernel's 64-bit image (a 32-bit process?)", pid);
  int tries = 0, stopped;
  while ((stopped = stop_all(pid, start, end)) == 0) {
    detach_all();
    if (++tries == 1000) return failed("pid %d: a thread stayed inside the vDSO for 1000 tries", pid);
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  int result = -1;
  int64_t was_offset, was_deadline;
  uint64_t was_tag;
  if (stopped < 0 || peek(pid, start, cur)) goto out;
  enum state before = state_of(cur, &was_offset, &was_deadline, &was_tag);
  if (action == STATUS) { result = (int)before; offset = was_offset; deadline = was_deadline; goto out; }
  if (action == APPLY && before == OTHER) { failed("pid %d: its vDSO code is not the kernel's (patched by another tool?)", pid); goto out; }
  if (action == APPLY && before == SKEWED && was_deadline > (int64_t)time(NULL)) {
    failed("pid %d is already skewed by %+llds until %lld (another clock-skew fault holds it)", pid,
           (long long)was_offset, (long long)was_deadline);
    goto out;
  }
  if (action == RESTORE && before == ORIGINAL) { result = ORIGINAL; goto out; } /* nothing to write: no copy-on-write */
  if (action == RESTORE && !any_tag && !(before == SKEWED && was_tag == tag)) {
    result = (int)before; /* another fault's skew (or another tool's code): not this restore's to remove */
    goto out;
  }
  for (size_t p = 0; p < NPATCH; p++) {
    unsigned char code[sizeof CG_TM];
    if (action == APPLY) patch_code(p, offset, deadline, tag, code);
    else memcpy(code, own + sym_off[p], PATCHES[p].len);
    if (poke(pid, start + sym_off[p], code, PATCHES[p].len)) goto out;
  }
  if (action == RESTORE) restored++;
  if (peek(pid, start, cur)) goto out;
  int64_t now_offset, now_deadline;
  uint64_t now_tag;
  enum state after = state_of(cur, &now_offset, &now_deadline, &now_tag);
  if (action == APPLY && !(after == SKEWED && now_offset == offset && now_deadline == deadline && now_tag == tag)) {
    failed("pid %d: the bytes read back are not the patch just written", pid);
    goto out;
  }
  if (action == RESTORE && (after != ORIGINAL || memcmp(cur, own, vdso_size))) {
    failed("pid %d: its vDSO still differs from the kernel's after the restore", pid);
    goto out;
  }
  result = (int)after;
out:
  detach_all();
  (void)offset;
  (void)deadline;
  return result;
}

static int pids[MAX_PIDS];
static int npids;

/* every process (not thread) whose cgroup file names the container ID, this process excluded */
static void find_container(const char *id) {
  DIR *d = opendir("/proc");
  if (!d) { say("cannot list /proc: %s", strerror(errno)); exit(EXIT_NOT_APPLIED); }
  struct dirent *de;
  while ((de = readdir(d)) && npids < MAX_PIDS) {
    pid_t pid = atoi(de->d_name);
    if (pid <= 0 || pid == getpid()) continue;
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%d/cgroup", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) continue;
    buf[n] = 0;
    if (strstr(buf, id)) pids[npids++] = pid;
  }
  closedir(d);
}

static void parse_target(const char *target) {
  if (!strncmp(target, "container:", 10) && strlen(target + 10) >= 12) {
    for (const char *c = target + 10; *c; c++)
      if (!strchr("0123456789abcdef", *c)) { say("not a container ID: %s", target + 10); exit(EXIT_NOT_APPLIED); }
    find_container(target + 10);
    return;
  }
  if (!strncmp(target, "pid:", 4)) {
    char *s = (char *)target + 4, *end;
    while (*s && npids < MAX_PIDS) {
      long v = strtol(s, &end, 10);
      if (end == s || v <= 0) { say("not a PID list: %s", target + 4); exit(EXIT_NOT_APPLIED); }
      pids[npids++] = (int)v;
      s = *end == ',' ? end + 1 : end;
    }
    return;
  }
  say("TARGET must be container:<ID> or pid:<PID>[,<PID>...], got %s", target);
  exit(EXIT_NOT_APPLIED);
}

static int read_comm(pid_t pid, char *out, size_t size) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/comm", pid);
  FILE *f = fopen(path, "r");
  if (!f || !fgets(out, (int)size, f)) { if (f) fclose(f); snprintf(out, size, "?"); return -1; }
  fclose(f);
  out[strcspn(out, "\n")] = 0;
  return 0;
}

static int yama_forbids(void) {
  FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "r");
  int scope = 0;
  if (!f) return 0;
  if (fscanf(f, "%d", &scope) != 1) scope = 0;
  fclose(f);
  return scope >= 3;
}

static int parse_seconds(const char *text, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (errno || end == text || *end) return -1;
  *out = v;
  return 0;
}

static int usage(void) {
  say("usage: coordinator-clock-skew apply OFFSET_S EXPIRE_AFTER_S TARGET TAG | restore TARGET [TAG] | status TARGET "
      "(TARGET: container:<ID> or pid:<PID>[,<PID>...])");
  return EXIT_NOT_APPLIED;
}

int main(int argc, char **argv) {
  if (argc < 3) return usage();
  enum action action;
  int64_t offset = 0, expire = 0;
  uint64_t tag = 0;
  int any_tag = 1;
  const char *target;
  const char *tag_text = NULL;
  if (!strcmp(argv[1], "apply") && argc == 6) {
    action = APPLY;
    if (parse_seconds(argv[2], &offset) || offset == 0 || offset > 315360000 || offset < -315360000) {
      say("OFFSET_S must be a non-zero number of seconds within 10 years, got %s", argv[2]);
      return EXIT_NOT_APPLIED;
    }
    if (parse_seconds(argv[3], &expire) || expire < 1 || expire > 8 * 24 * 3600) {
      say("EXPIRE_AFTER_S must be between 1 and 691200 seconds, got %s", argv[3]);
      return EXIT_NOT_APPLIED;
    }
    target = argv[4];
    tag_text = argv[5];
  } else if (!strcmp(argv[1], "restore") && (argc == 3 || argc == 4)) {
    action = RESTORE;
    target = argv[2];
    tag_text = argc == 4 ? argv[3] : NULL;
  } else if (!strcmp(argv[1], "status") && argc == 3) {
    action = STATUS;
    target = argv[2];
  } else {
    return usage();
  }
  if (tag_text) {
    char *end;
    if (strlen(tag_text) != 16 || strspn(tag_text, "0123456789abcdef") != 16) {
      say("TAG must be 16 lowercase hex digits, got %s", tag_text);
      return EXIT_NOT_APPLIED;
    }
    tag = strtoull(tag_text, &end, 16);
    any_tag = 0;
  }
  if (action == APPLY && yama_forbids()) {
    say("kernel.yama.ptrace_scope=3 forbids ptrace: clock-skew cannot be applied on this node");
    return EXIT_NOT_APPLIED;
  }
  load_own_vdso();
  parse_target(target);
  if (npids == 0) {
    say("no process of %s to %s", target, action == APPLY ? "skew" : "check");
    return action == APPLY ? EXIT_NOT_APPLIED : 0;
  }
  /* a TERM during the patching must not leave some processes skewed and others not: hold it until the end */
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGHUP);
  sigprocmask(SIG_BLOCK, &block, NULL);
  int64_t deadline = (int64_t)time(NULL) + expire;
  unsigned char *cur = malloc(vdso_size);
  int done = 0, failures = 0, others = 0;
  char comm[64];
  for (int i = 0; i < npids; i++) {
    pid_t pid = pids[i];
    read_comm(pid, comm, sizeof comm);
    int before_restored = restored;
    int st = act(pid, action, offset, deadline, tag, any_tag, cur);
    if (st < 0) {
      if (vanished) { say("pid %d (%s) exited meanwhile: skipped", pid, comm); continue; }
      say("%s", why);
      if (action == STATUS) continue;
      failures++;
      if (action == APPLY) break;
      continue;
    }
    if (action == STATUS) {
      int64_t o, dl;
      uint64_t t;
      state_of(cur, &o, &dl, &t);
      if (st == ORIGINAL) printf("pid %d (%s): original\n", pid, comm);
      else if (st == SKEWED) printf("pid %d (%s): %s %+llds until %lld (tag %016llx)\n", pid, comm,
                                    dl > (int64_t)time(NULL) ? "skewed" : "expired", (long long)o, (long long)dl,
                                    (unsigned long long)t);
      else printf("pid %d (%s): other\n", pid, comm);
    } else if (action == APPLY) {
      say("pid %d (%s) skewed by %+llds until %lld, verified", pid, comm, (long long)offset, (long long)deadline);
    } else if (st == ORIGINAL) {
      say("pid %d (%s) original%s", pid, comm, restored > before_restored ? " (restored, verified)" : "");
    } else {
      say("pid %d (%s) holds another fault's skew or foreign code: left as it is", pid, comm);
      others++;
    }
    done++;
  }
  if (action == APPLY && (failures || done == 0)) {
    /* all or nothing: put back what this run patched */
    for (int i = 0; i < npids; i++)
      if (act(pids[i], RESTORE, 0, 0, tag, 0, cur) < 0 && !vanished) say("%s", why);
    if (!failures) say("no process of %s to skew (every one exited)", target);
    return EXIT_NOT_APPLIED;
  }
  if (action == APPLY) say("skewed %d processes by %+llds until %lld", done, (long long)offset, (long long)deadline);
  if (action == RESTORE)
    say("%d processes checked, %d restored, %d left with another fault's skew", done, restored, others);
  return failures ? EXIT_RESTORE_FAILED : 0;
}
#endif
