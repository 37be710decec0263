// `osbuild doctor`: whether this machine can build the config, asked of the steps
// themselves: the programs each one declares (`tools`, with their Debian packages) and what
// it needs of the machine besides (`requirements`: user namespaces, subordinate ids,
// emulation of another architecture). The engine knows none of these: the steps say them.
// Everything is checked in one go; the missing packages come out as one apt-get line.

import { userInfo } from "node:os";
import { machineArch, type LoadedConfig } from "../config/load.js";
import { errorMessage } from "../errors.js";
import { TOOL_PATH } from "../tool-environment.js";
import { findOnPath } from "../tools.js";
import type { BuildMachine, MachineProblem, MachineRequirement, ToolSpec } from "../types.js";

interface Needed<T> {
  readonly what: T;
  /** Ids of the steps that need it, in build order. */
  readonly steps: string[];
}

interface Finding {
  readonly label: string;
  readonly steps: readonly string[];
  readonly problem?: MachineProblem;
  /** A tool the steps do without: reported, but it does not make builds fail. */
  readonly optional?: boolean;
}

export async function doctor(config: LoadedConfig, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const machine: BuildMachine = { arch: config.arch, hostArch: machineArch(), root: process.getuid?.() === 0 };
  const tools = new Map<string, Needed<ToolSpec>>();
  const requirements = new Map<string, Needed<MachineRequirement>>();
  for (const id of config.graph.order) {
    const { spec, options } = config.graph.steps.get(id)!.node;
    const stepTools = typeof spec.tools === "function" ? spec.tools(options, machine) : (spec.tools ?? []);
    for (const tool of stepTools) need(tools, tool.command, tool, id);
    for (const requirement of spec.requirements?.(options, machine) ?? []) need(requirements, requirement.name, requirement, id);
  }

  const toolFindings: Finding[] = [...tools.values()].map(({ what: tool, steps }) => {
    const problem = findOnPath(tool.command) ? undefined : missingTool(tool);
    const label = `${tool.command === tool.package ? tool.command : `${tool.command} (${tool.package})`}${tool.optional ? ", optional" : ""}`;
    return { label, steps, ...(problem ? { problem } : {}), ...(tool.optional ? { optional: true } : {}) };
  });
  const machineFindings: Finding[] = [...requirements.values()].map(({ what: requirement, steps }) => {
    let problem: MachineProblem | undefined;
    try {
      problem = requirement.check();
    } catch (error) {
      problem = { problem: `could not be checked: ${errorMessage(error)}`, fix: "check it by hand" };
    }
    return { label: requirement.name, steps, ...(problem ? { problem } : {}) };
  });

  const who = machine.root ? "as root" : `as ${userName()} (unprivileged)`;
  const arch = machine.arch === machine.hostArch ? machine.arch : `${machine.arch} on ${machine.hostArch}`;
  out.write(`osbuild doctor: ${config.graph.steps.size} steps for ${arch}, building ${who}\n`);
  const width = Math.max(0, ...[...toolFindings, ...machineFindings].map((finding) => finding.label.length)) + 2;
  printSection(out, "tools", toolFindings, width);
  printSection(out, "machine", machineFindings, width);

  const problems = [...toolFindings, ...machineFindings].filter((finding) => finding.problem && !finding.optional);
  const packages = [...new Set(problems.flatMap((finding) => finding.problem!.packages ?? []))].sort();
  if (problems.length === 0) {
    out.write(`\neverything the config's steps need is here: builds ${who} will work\n`);
  } else {
    out.write(`\nbuilds ${who} will fail until ${problems.length === 1 ? "this is" : `these ${problems.length} are`} fixed\n`);
    if (packages.length > 0) out.write(`install the missing packages:\n  ${machine.root ? "" : "sudo "}apt-get install ${packages.join(" ")}\n`);
  }
  if (machine.root) out.write("(unprivileged builds may need more, such as subordinate ids: run osbuild doctor as the user who builds)\n");
  return problems.length === 0 ? 0 : 1;
}

/** A program that is not where steps look for programs (engine/tool-environment.ts). */
function missingTool(tool: ToolSpec): MachineProblem {
  return { problem: `not installed (looked in ${TOOL_PATH})`, fix: `apt-get install ${tool.package}`, packages: [tool.package] };
}

function need<T>(map: Map<string, Needed<T>>, key: string, what: T, stepId: string): void {
  const known = map.get(key);
  if (!known) map.set(key, { what, steps: [stepId] });
  else if (!known.steps.includes(stepId)) known.steps.push(stepId);
}

function printSection(out: NodeJS.WritableStream, title: string, findings: readonly Finding[], width: number): void {
  if (findings.length === 0) return;
  out.write(`${title}:\n`);
  for (const { label, steps, problem, optional } of findings) {
    out.write(`  ${(problem ? "missing" : "ok").padEnd(9)}${label.padEnd(width)}${steps.join(", ")}\n`);
    if (!problem) continue;
    out.write(`           ${problem.problem}${optional ? "; the steps do without it" : ""}\n`);
    // A fix that is only installing packages is in the apt-get line at the end (not an optional one's).
    if (optional || problem.fix !== `apt-get install ${(problem.packages ?? []).join(" ")}`) out.write(`           fix: ${problem.fix}\n`);
  }
}

function userName(): string {
  try {
    return userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? "?"}`;
  }
}
