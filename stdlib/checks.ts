// The checks osbuilder makes before packing a rootfs (image_builder.sh check_rootfs,
// initrd_builder.sh): there is an init, it is systemd or the agent as intended.

import type { FileEntry, RootfsInput } from "../engine/index.js";
import { OSBUILDER_YAML_PATH } from "./facts.js";
import { agentIsInit } from "./osbuilder-yaml.js";
import { SYSTEMD_PATHS } from "./units.js";

/** Whether to check: yes, no, or as for this init (what osbuilder's scripts take from AGENT_INIT). */
export type BootChecks = boolean | "agent" | "systemd";

/**
 * Returns what is wrong with the rootfs as a bootable Kata guest, or undefined. `checks`:
 * true or false as the user asked, or the init to check for; by default only a rootfs made
 * by installAgent (which writes osbuilder.yaml, naming the init) is checked.
 */
export async function checkBootable(rootfs: RootfsInput, checks?: BootChecks): Promise<string | undefined> {
  if (checks === false) return undefined;
  let yaml: string | undefined;
  try {
    yaml = (await rootfs.readFile(OSBUILDER_YAML_PATH)).toString("utf8");
  } catch {
    yaml = undefined;
  }
  if (checks === undefined && yaml === undefined) return undefined;

  const init = await rootfs.stat("sbin/init");
  if (!init) return "/sbin/init is not installed in the rootfs: installAgent (init: \"agent\") or the distro's init package (fetchBase with init: \"systemd\") should have made it";
  if (init.type !== "symlink" && !isExecutable(init)) return `/sbin/init is not executable (mode ${init.mode.toString(8)}): installAgent should have installed it with mode 755`;
  if (yaml === undefined && typeof checks !== "string") return undefined; // not made by installAgent: only the init check applies

  const agentInit = typeof checks === "string" ? checks === "agent" : agentIsInit(yaml!);
  if (agentInit === false) {
    for (const path of SYSTEMD_PATHS) if (await rootfs.stat(path)) return undefined;
    return `none of /${SYSTEMD_PATHS.join(", /")} is installed, but systemd is to start the agent: fetchBase with init: "systemd" installs it`;
  }
  if (agentInit === true) {
    const agent = await rootfs.stat("sbin/init", { follow: true });
    if (agent?.type !== "file") return undefined;
    if (!isExecutable(agent)) return "/sbin/init (the agent) is not executable: installAgent should have made it so";
    let agentBytes: Buffer | undefined;
    for (const path of SYSTEMD_PATHS) {
      const systemd = await rootfs.stat(path, { follow: true });
      if (systemd?.type !== "file" || systemd.size !== agent.size) continue;
      agentBytes ??= await rootfs.readFile("sbin/init");
      if ((await rootfs.readFile(path)).equals(agentBytes)) return "the agent is not the init process: /sbin/init is systemd. installAgent with init: \"agent\" replaces it";
    }
  }
  return undefined;
}

function isExecutable(entry: FileEntry): boolean {
  return (entry.mode & 0o111) !== 0;
}
