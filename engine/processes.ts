// The programs a build started, found through /proc: an interrupted build stops every one of
// them (children and their children: mmdebstrap's apt and dpkg, a sandbox's shell) before
// it removes the directories they write into. Signals go to each process by pid, never to
// a process group, which osbuild shares with whoever started it.

import { readFileSync, readdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

/** The pids of every live process below `root` (default: this one). */
export function descendants(root = process.pid): number[] {
  const children = new Map<number, number[]>();
  let names: string[];
  try {
    names = readdirSync("/proc");
  } catch {
    return [];
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "latin1");
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z") continue; // a zombie is already dead
    const parent = Number(fields[1]);
    const list = children.get(parent) ?? [];
    list.push(Number(name));
    children.set(parent, list);
  }
  const found: number[] = [];
  const pending = [...(children.get(root) ?? [])];
  while (pending.length > 0) {
    const pid = pending.pop()!;
    found.push(pid);
    pending.push(...(children.get(pid) ?? []));
  }
  return found;
}

/**
 * Sends `signal` to every process below this one, then waits until none is left; those
 * still running after `graceMs` get SIGKILL. Returns how many processes there were.
 */
export async function stopDescendants(signal: NodeJS.Signals, graceMs: number): Promise<number> {
  const first = descendants();
  const send = (pids: readonly number[], which: NodeJS.Signals): void => {
    for (const pid of pids) {
      try {
        process.kill(pid, which);
      } catch {
        /* gone already */
      }
    }
  };
  send(first, signal);
  const deadline = Date.now() + graceMs;
  for (let left = descendants(); left.length > 0; left = descendants()) {
    // Processes started since (a tool's own cleanup) are left to finish until the deadline.
    if (Date.now() >= deadline) send(left, "SIGKILL");
    await sleep(50);
  }
  return first.length;
}
