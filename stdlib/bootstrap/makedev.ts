// The device nodes osbuilder's Debian/Ubuntu builder makes in the guest's /dev with
// `MAKEDEV -v console tty ttyS null zero fd` (Debian's makedev 2.3.1), as data: names,
// numbers, modes and groups as MAKEDEV gives them. The groups are Debian's fixed ids
// (base-passwd): tty 5, disk 6, kmem 15, dialout 20. mmdebstrap has already made the few
// nodes a chroot needs (null, zero, full, random, urandom, tty, console, ptmx); these are
// made over them with MAKEDEV's modes.

export interface DeviceNode {
  /** Under /dev. */
  readonly name: string;
  readonly type: "char" | "block";
  readonly major: number;
  readonly minor: number;
  readonly mode: number;
  readonly gid: number;
}

/** [name under /dev, link target] */
export type DeviceLink = readonly [string, string];

const TTY = 5;
const DISK = 6;
const KMEM = 15;
const DIALOUT = 20;

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, index) => from + index);
const char = (name: string, major: number, minor: number, mode: number, gid: number): DeviceNode => ({ name, type: "char", major, minor, mode, gid });
const block = (name: string, major: number, minor: number): DeviceNode => ({ name, type: "block", major, minor, mode: 0o660, gid: DISK });

/** Every node, in MAKEDEV's order (later entries of the same name win). */
export const MAKEDEV_NODES: readonly DeviceNode[] = [
  // console: the first console, the console itself, 63 virtual terminals and their screen memory
  char("tty0", 4, 0, 0o600, TTY),
  char("console", 5, 1, 0o600, TTY),
  char("vcs0", 7, 0, 0o600, TTY),
  char("vcsa0", 7, 128, 0o600, TTY),
  ...range(1, 63).flatMap((line) => [char(`tty${line}`, 4, line, 0o600, TTY), char(`vcs${line}`, 7, line, 0o600, TTY), char(`vcsa${line}`, 7, 128 + line, 0o600, TTY)]),
  // tty: the controlling terminal
  char("tty", 5, 0, 0o666, TTY),
  // ttyS: the first five serial ports
  ...range(0, 4).map((port) => char(`ttyS${port}`, 4, 64 + port, 0o660, DIALOUT)),
  // null and zero: MAKEDEV's "std" set, with RAM disks and loop devices
  char("mem", 1, 1, 0o640, KMEM),
  char("kmem", 1, 2, 0o640, KMEM),
  char("null", 1, 3, 0o666, 0),
  char("port", 1, 4, 0o640, KMEM),
  char("zero", 1, 5, 0o666, 0),
  char("full", 1, 7, 0o666, 0),
  char("random", 1, 8, 0o666, 0),
  char("urandom", 1, 9, 0o666, 0),
  ...range(0, 16).map((disk) => block(`ram${disk}`, 1, disk)),
  ...range(0, 7).map((loop) => block(`loop${loop}`, 7, loop)),
];

export const MAKEDEV_LINKS: readonly DeviceLink[] = [
  ["vcs", "vcs0"],
  ["vcsa", "vcsa0"],
  ["core", "/proc/kcore"],
  ["ram", "ram1"],
  // fd: the /proc links
  ["fd", "/proc/self/fd"],
  ["stdin", "fd/0"],
  ["stdout", "fd/1"],
  ["stderr", "fd/2"],
];
