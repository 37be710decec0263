// Who is using a kept tree. Trees under trees/ are shared by every build on one cache: one
// process's mke2fs -d may read a tree while another would prune it or take it for a step.
// A reader holds a lease (a file naming its pid) for as long as the build runs; a process
// that moves a tree away (prune, take) first puts down an exclusive marker, then looks for
// leases. Each side writes its own file before it looks for the other's, so at least one of
// two racing processes sees the other and backs off: a reader never sees its tree change.
// Files of processes that no longer run count for nothing.

import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

type Kind = "lease" | "exclusive";

export class TreeLeases {
  private readonly dir: string;
  /** Trees this process holds a lease on → its lease file. */
  private readonly held = new Map<string, string>();

  constructor(treesDir: string) {
    this.dir = join(treesDir, ".leases");
    mkdirSync(this.dir, { recursive: true });
  }

  /** Leases `tree` (a tree's directory name) for this process, waiting out a move in progress. */
  async acquire(tree: string): Promise<void> {
    if (this.held.has(tree)) return;
    for (let attempt = 0; ; attempt++) {
      const file = this.put(tree, "lease");
      if (!this.othersHold(tree, "exclusive") || attempt >= 200) {
        this.held.set(tree, file);
        return;
      }
      rmSync(file, { force: true });
      await sleep(10); // a prune or take renames the tree and is done
    }
  }

  /**
   * Runs `move` (which takes the tree away) only if no other live process holds a lease on
   * it; returns whether it ran. This process's own lease is given up.
   */
  exclusively(tree: string, move: () => void): boolean {
    const marker = this.put(tree, "exclusive");
    try {
      if (this.othersHold(tree, "lease") || this.othersHold(tree, "exclusive")) return false;
      this.release(tree);
      move();
      return true;
    } finally {
      rmSync(marker, { force: true });
    }
  }

  /** Whether this process holds a lease on `tree` (one of its steps may be reading it). */
  holds(tree: string): boolean {
    return this.held.has(tree);
  }

  release(tree: string): void {
    const file = this.held.get(tree);
    if (file === undefined) return;
    rmSync(file, { force: true });
    this.held.delete(tree);
  }

  releaseAll(): void {
    for (const tree of [...this.held.keys()]) this.release(tree);
  }

  private put(tree: string, kind: Kind): string {
    const file = join(this.dir, `${tree}.${kind}.${process.pid}.${Math.random().toString(36).slice(2)}`);
    writeFileSync(file, "");
    return file;
  }

  /** Whether another process that still runs has a file of `kind` for `tree` (dead ones' are removed). */
  private othersHold(tree: string, kind: Kind): boolean {
    const prefix = `${tree}.${kind}.`;
    let found = false;
    for (const name of readdirSync(this.dir)) {
      if (!name.startsWith(prefix)) continue;
      const pid = Number(name.slice(prefix.length).split(".")[0]);
      if (pid === process.pid) continue;
      if (isRunning(pid)) found = true;
      else rmSync(join(this.dir, name), { force: true });
    }
    return found;
  }
}

function isRunning(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
