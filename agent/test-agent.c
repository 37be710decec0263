/*
 * osbuild's stand-in for kata-agent: a static program that proves a guest image boots.
 *
 * The real kata-agent cannot be built on the build machines (it needs the crates
 * registry), so tests and the default config install this instead. It prints a marker
 * on the console. As PID 1 (agent as init) it first makes sure /dev/console exists, and
 * powers the VM off after printing. Started any other way (a systemd service, or by
 * hand on a build machine) it prints and then waits, as a real agent would: it never
 * powers off a machine it is not the init of.
 *
 * A real kata-agent binary works unchanged in its place: osbuild run --set agent=PATH.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#define MARKER "OSBUILD-TEST-AGENT"

static void console_as_stdout(void) {
    if (access("/dev/console", W_OK) != 0) {
        mkdir("/dev", 0755);
        mount("devtmpfs", "/dev", "devtmpfs", 0, "mode=0755");
    }
    int fd = open("/dev/console", O_WRONLY | O_NOCTTY);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO) close(fd);
    }
}

int main(int argc, char **argv) {
    (void)argc;
    int is_init = getpid() == 1;
    if (is_init) console_as_stdout();

    struct utsname host;
    uname(&host);
    printf("%s: started as %s (pid %d) on Linux %s %s\n", MARKER, argv[0], (int)getpid(), host.release, host.machine);
    printf("%s: init=%s\n", MARKER, is_init ? "agent" : "systemd");
    fflush(stdout);

    if (argc > 1 && strcmp(argv[1], "--version") == 0) return 0;

    if (is_init) {
        sync();
        if (reboot(RB_POWER_OFF) != 0) perror(MARKER ": reboot");
    }
    /* As PID 1, returning would panic the kernel; as a service, stay up like an agent. */
    for (;;) pause();
}
