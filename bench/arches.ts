// The default config built cold for each architecture on this machine (a foreign base is
// made by mmdebstrap under qemu-user), then its initrd and disk image booted under QEMU's
// emulation, each osbuild command timed as a whole process. One run each: a cold foreign
// base takes minutes. Needs scripts/setup.sh's guest kernels and cross-built agents.
// Run: npm run bench:arches

import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OSBUILD, REPO, machine, saveResult, timed } from "./lib.js";

const ARCHES = [
  { arch: "x86_64", agent: join(REPO, "build/agent/kata-agent"), kernel: undefined },
  { arch: "aarch64", agent: join(REPO, "build/agent/aarch64/kata-agent"), kernel: join(REPO, "build/guest-kernels/aarch64") },
  { arch: "s390x", agent: join(REPO, "build/agent/s390x/kata-agent"), kernel: join(REPO, "build/guest-kernels/s390x") },
] as const;

const MARKER = "OSBUILD-TEST-AGENT: started as";
const rows = [];
for (const { arch, agent, kernel } of ARCHES) {
  const dir = mkdtempSync(join(tmpdir(), `osbuild-bench-${arch}-`));
  try {
    copyFileSync(join(REPO, "osbuild.config.ts"), join(dir, "osbuild.config.ts"));
    const common = ["--arch", arch, "--set", `agent=${agent}`, "--cache-dir", join(dir, "cache")];
    const osbuild = (args: string[]): number => timed(process.execPath, [OSBUILD, ...args, ...common], { cwd: dir }).ms;
    const kernelArgs = kernel ? ["--kernel", kernel] : [];
    const coldMs = osbuild(["run"]);
    const noopMs = osbuild(["run"]);
    const initrdBootMs = osbuild(["boot", "initrd", ...kernelArgs, "--expect", `${MARKER} /init (pid 1)`, "--accel", "tcg"]);
    const imageBootMs = osbuild(["boot", "image", ...kernelArgs, "--expect", `${MARKER} /sbin/init (pid 1)`, "--accel", "tcg"]);
    const row = { arch, coldMs: Math.round(coldMs), noopMs: Math.round(noopMs), initrdBootMs: Math.round(initrdBootMs), imageBootMs: Math.round(imageBootMs) };
    console.log(`${arch}: cold ${(row.coldMs / 1000).toFixed(1)} s, no-op ${(row.noopMs / 1000).toFixed(1)} s, initrd boot ${(row.initrdBootMs / 1000).toFixed(1)} s, disk boot ${(row.imageBootMs / 1000).toFixed(1)} s`);
    rows.push(row);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const result = { benchmark: "arches", machine: machine(), date: new Date().toISOString(), note: "one run each; boots under TCG (no KVM), to the agent's marker", rows };
console.log(`written to ${saveResult("arches", result)}`);
