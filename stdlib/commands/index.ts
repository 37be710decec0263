// The subcommands the standard library adds to `osbuild`: their names, usage and options
// here, their code in a file each, imported only when the command runs (so that every
// other command starts without it).

import { defineCommand, type CommandSpec } from "../../engine/index.js";
import { TEMPLATES, DEFAULT_TEMPLATE } from "../templates/index.js";

const later =
  (load: () => Promise<Pick<CommandSpec, "run">>): CommandSpec["run"] =>
  async (args, options, ctx) =>
    (await load()).run(args, options, ctx);

export const stdlibCommands: readonly CommandSpec[] = [
  defineCommand({
    name: "boot",
    summary: "boot an initrd or disk image in QEMU (TARGET: a target of the config, or a file)",
    usage: "boot TARGET [--expect TEXT] [--kernel PATH|DIR] [--arch ARCH] [--timeout S] [--nvdimm] [--extension NAME=IMAGE[,VERITY_PARAMS]]...",
    options: {
      kernel: {
        type: "string",
        description: "kernel to boot, or a directory holding boot/vmlinuz-* with its lib/modules and bin/busybox (a Debian kernel and busybox-static unpacked: how a guest of another architecture boots; default: the newest /boot/vmlinuz-*)",
      },
      modules: { type: "string", description: "modules of that kernel for a disk image's boot initrd (default: lib/modules/<its version> beside the kernel, /lib/modules for /boot)" },
      expect: { type: "string", description: "succeed as soon as this text appears on the console" },
      timeout: { type: "string", description: "seconds before giving up (default 180)" },
      memory: { type: "string", description: "guest memory in MiB (default 1024)" },
      append: { type: "string", description: "more kernel command-line arguments" },
      nvdimm: { type: "boolean", description: "attach a disk image as a read-only NVDIMM, as Kata does on x86 (DAX)" },
      accel: { type: "string", description: "tcg, kvm or auto (default auto: KVM when it works here)" },
      extension: {
        type: "string",
        multiple: true,
        description: "NAME=IMAGE[,VERITY_PARAMS]: a guest extension image (file or target) as Kata's runtime attaches it: virtio-blk with serial extension-NAME, kata.extension.NAME.verity_params=... from the VERITY_PARAMS file or target",
      },
    },
    run: later(async () => (await import("./boot.js")).boot),
  }),
  defineCommand({
    name: "osbuilder",
    summary: "Kata's osbuilder as a drop-in: make targets and VAR=VALUE, or its image/initrd/rootfs builders",
    usage: "osbuilder [--print-config] [TARGET...] [VAR=VALUE...]",
    rawArguments: true,
    run: later(async () => (await import("./osbuilder.js")).osbuilder),
  }),
  defineCommand({
    name: "verify-reproducible",
    summary: "build twice from empty caches and compare the outputs byte for byte (or rebuild what a provenance statement records)",
    usage: "verify-reproducible [TARGET...] [--provenance FILE]... [--keep]",
    options: {
      keep: { type: "boolean", description: "keep the builds' caches and outputs for inspection" },
      provenance: { type: "string", multiple: true, description: "a <target>.intoto.json: rebuild from the inputs it records and check its subjects" },
    },
    run: later(async () => (await import("./verify-reproducible.js")).verifyReproducible),
  }),
  defineCommand({
    name: "init",
    summary: "start a project in DIR (default .): an osbuild.config.ts from a template, tsconfig.json, package.json",
    usage: "init [DIR] [--template NAME] [--force]",
    options: {
      template: { type: "string", description: `what to start from (default ${DEFAULT_TEMPLATE}):${TEMPLATES.map((template) => `\n${" ".repeat(26)}${template.name}: ${template.summary}`).join("")}` },
      force: { type: "boolean", description: "overwrite the files the template writes (package.json is never overwritten)" },
    },
    run: later(async () => (await import("./init.js")).init),
  }),
];
