// installAgent: puts the kata-agent into the rootfs and sets up who starts it, exactly as
// osbuilder's rootfs.sh does: the agent as init (/sbin/init), or systemd starting
// kata-agent.service through kata-containers.target. Then writes osbuilder.yaml.

import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { defineStep, type Tree } from "../engine/index.js";
import { checkAgentBinary, stripTool } from "./agent-binary.js";
import type { InitSystem } from "./fetch-base.js";
import { OSBUILDER_YAML_PATH, readBaseFacts } from "./facts.js";
import { osReleaseValue } from "./os-release.js";
import { osbuilderYaml } from "./osbuilder-yaml.js";
import { AGENT_PATH, AGENT_UNIT_LINKS, KATA_AGENT_SERVICE, KATA_CONTAINERS_TARGET, SYSTEMD_PATHS, TMP_MOUNT, UNIT_DIR } from "./units.js";

export interface InstallAgentOptions {
  /** A kata-agent binary on the host. */
  binary?: string;
  /** Or a tarball holding usr/bin/kata-agent (and possibly its units), as Kata releases ship it. */
  tarball?: string;
  /** Who is PID 1: the agent itself, or systemd. */
  init: InitSystem;
  /** Recorded in osbuilder.yaml. Default "unknown". */
  version?: string;
  /** Strip the binary, as osbuilder does (when a strip for its architecture is at hand). Default true. */
  strip?: boolean;
  /** Confidential guest: kata-containers.target also requires systemd-remount-fs (see provision's fstab line). */
  confidential?: boolean;
  /** The builder version osbuilder.yaml records (osbuilder's rootfs.sh -o). Default: osbuild's version. */
  builderVersion?: string;
}

export const installAgent = defineStep({
  kind: "install-agent",
  version: 5,
  inputs: ["rootfs"],
  output: "rootfs",
  hostPaths: ["binary", "tarball"],
  tools: (options: InstallAgentOptions, { arch, hostArch }) => (options.strip === false ? [] : [stripTool(arch, hostArch)]),
  validate(options: InstallAgentOptions) {
    if ((options.binary === undefined) === (options.tarball === undefined)) return "give exactly one of 'binary' or 'tarball'";
    if (options.init !== "agent" && options.init !== "systemd") return `init must be "agent" or "systemd", got ${JSON.stringify(options.init)}`;
    return undefined;
  },
  async run(options: InstallAgentOptions, ctx) {
    if (options.binary !== undefined) checkAgentBinary(options.binary, ctx.arch, ctx.fail);
    const tree = await ctx.tree();
    const agent = tree.path(AGENT_PATH);
    if (options.binary !== undefined) {
      mkdirSync(join(agent, ".."), { recursive: true });
      rmSync(agent, { force: true });
      copyFileSync(options.binary, agent);
      tree.chown(AGENT_PATH, 0, 0);
    } else {
      await tree.extract(options.tarball!);
      if (!existsSync(agent)) ctx.fail(`the agent tarball ${options.tarball} has no /${AGENT_PATH}`);
      checkAgentBinary(agent, ctx.arch, ctx.fail);
    }
    chmodSync(agent, 0o755);
    if (options.strip ?? true) {
      const strip = stripTool(ctx.arch, ctx.hostArch);
      if (ctx.hasTool(strip.command)) await ctx.exec(strip.command, [agent]);
      else ctx.log(`not stripping the ${ctx.arch} agent: ${strip.command} is not installed (apt-get install ${strip.package}); it goes in as it is`);
    }

    const installedAt = options.init === "agent" ? "sbin/init" : AGENT_PATH;
    if (options.init === "agent") {
      // mv -f kata-agent /sbin/init, as osbuilder's setup_agent_init
      const init = tree.path("sbin/init", { followSymlink: false });
      mkdirSync(join(init, ".."), { recursive: true });
      rmSync(init, { force: true });
      renameSync(agent, init);
      link(tree, "init", "/sbin/init");
    } else {
      installSystemdUnits(tree, options.confidential ?? false);
      if (!SYSTEMD_PATHS.some((path) => existsSync(tree.path(path)))) {
        ctx.fail(`systemd is not installed (none of /${SYSTEMD_PATHS.join(", /")}): fetch the base with init: "systemd" or add the distro's init package`);
      }
      if (!exists(tree, "init")) link(tree, "init", "/lib/systemd/systemd");
    }

    // For the SBOM and `osbuild why`: the agent as installed, and the host file it came from.
    const sha256 = createHash("sha256").update(readFileSync(tree.path(installedAt))).digest("hex");
    ctx.provenance.component({ name: "kata-agent", version: options.version ?? "unknown", architecture: ctx.arch, digests: { sha256 }, files: [installedAt] });
    if (options.binary !== undefined) ctx.provenance.hostFile(installedAt, options.binary);

    const facts = readBaseFacts(tree);
    const yaml = osbuilderYaml({
      sourceDateEpoch: ctx.sourceDateEpoch,
      architecture: ctx.arch,
      distro: facts ? { name: facts.prettyName, version: facts.release, packages: facts.packages } : osRelease(tree),
      agent: { version: options.version ?? "unknown", isInit: options.init === "agent" },
      builderVersion: options.builderVersion,
    });
    const yamlPath = tree.path(OSBUILDER_YAML_PATH);
    mkdirSync(join(yamlPath, ".."), { recursive: true });
    writeFileSync(yamlPath, yaml);
  },
});

/** The units osbuilder installs with systemd as init (kept when the tarball brought its own). */
function installSystemdUnits(tree: Tree, confidential: boolean): void {
  const unitDir = tree.path(UNIT_DIR);
  mkdirSync(unitDir, { recursive: true });
  const write = (name: string, content: string): void => {
    const path = join(unitDir, name);
    if (!existsSync(path)) writeFileSync(path, content, { mode: 0o644 });
  };
  write("kata-agent.service", KATA_AGENT_SERVICE);
  write("kata-containers.target", KATA_CONTAINERS_TARGET);
  if (confidential) {
    const target = join(unitDir, "kata-containers.target");
    const text = readFileSync(target, "utf8");
    if (!/^Requires=.*systemd-remount-fs\.service/m.test(text)) writeFileSync(target, `${text}Requires=systemd-remount-fs.service\n`);
  }
  // rootfs.sh: the distro's tmp.mount when systemd has none installed, else its own copy.
  if (!exists(tree, "etc/systemd/system/tmp.mount") && !exists(tree, `${UNIT_DIR}/tmp.mount`)) {
    const shipped = tree.path("usr/share/systemd/tmp.mount");
    const target = tree.path("etc/systemd/system/tmp.mount", { followSymlink: false });
    mkdirSync(join(target, ".."), { recursive: true });
    if (existsSync(shipped)) copyFileSync(shipped, target);
    else writeFileSync(target, TMP_MOUNT);
    chmodSync(target, 0o644);
  }
  for (const [path, target] of AGENT_UNIT_LINKS) link(tree, path, target);
}

/** ln -sf TARGET PATH inside the tree. */
function link(tree: Tree, path: string, target: string): void {
  const host = tree.path(path, { followSymlink: false });
  mkdirSync(join(host, ".."), { recursive: true });
  rmSync(host, { force: true });
  symlinkSync(target, host);
}

function exists(tree: Tree, path: string): boolean {
  try {
    lstatSync(tree.path(path, { followSymlink: false }));
    return true;
  } catch {
    return false;
  }
}

/** Without fetchBase's record (an image or tarball base): what /etc/os-release says. */
function osRelease(tree: Tree): { name: string; version: string; packages: { default: string[]; extra: string[] } } {
  let text = "";
  try {
    text = readFileSync(tree.path("etc/os-release"), "utf8");
  } catch {
    /* none */
  }
  const value = (key: string): string => osReleaseValue(text, key);
  return { name: value("ID") || "unknown", version: value("VERSION_CODENAME") || value("VERSION_ID") || "unknown", packages: { default: [], extra: [] } };
}
