// The osbuilder front door's build, as data: a list of step calls and the targets made from
// them. The same plan is turned into a graph (instantiate) and printed as the equivalent
// osbuild.config.ts (config-source.ts), so that what --print-config shows is what was built.

import type { Arch, Artifact, Targets } from "../../engine/index.js";
import { addKernelModules } from "../add-kernel-modules.js";
import { dracut } from "../dracut.js";
import { emptyMachineId } from "../empty-machine-id.js";
import { fetchBase } from "../fetch-base.js";
import { fromInitrd } from "../from-initrd.js";
import { installAgent } from "../install-agent.js";
import { mkCpio } from "../mk-cpio.js";
import { mkExt4 } from "../mk-ext4.js";
import { mkExtensionImage } from "../mk-extension-image.js";
import { mkTar } from "../mk-tar.js";
import { mkVerityImage } from "../mk-verity-image.js";
import { provision } from "../provision.js";

/** The steps a plan may call (all of them the standard library's, as a config would). */
const STEPS = { fetchBase, provision, addKernelModules, installAgent, emptyMachineId, mkExt4, mkVerityImage, mkExtensionImage, mkCpio, mkTar, dracut, fromInitrd } as const;

export type StepName = keyof typeof STEPS;

export interface PlannedCall {
  /** The variable the result is kept in (and printed as). */
  readonly name: string;
  readonly step: StepName;
  /** The variable holding the input artifact, for steps that take one. */
  readonly input?: string;
  readonly options: Readonly<Record<string, unknown>>;
  /** A line of comment printed above the call. */
  readonly comment?: string;
}

export interface PlannedTarget {
  /** The target's name: the file name osbuilder gives it. */
  readonly name: string;
  /** The variable, and for a step with several outputs, which one. */
  readonly from: string;
  readonly output?: string;
}

export class Plan {
  readonly calls: PlannedCall[] = [];
  readonly targets: PlannedTarget[] = [];

  constructor(
    readonly sourceDateEpoch: number,
    readonly arch: Arch | undefined,
  ) {}

  /** Adds a call unless an equal one is there already; returns its variable. */
  call(step: StepName, name: string, input: string | undefined, options: Record<string, unknown>, comment?: string): string {
    const key = JSON.stringify([step, input ?? null, options]);
    const same = this.calls.find((call) => JSON.stringify([call.step, call.input ?? null, call.options]) === key);
    if (same) return same.name;
    let unique = name;
    for (let counter = 2; this.calls.some((call) => call.name === unique); counter++) unique = `${name}${counter}`;
    this.calls.push({ name: unique, step, input, options: withoutUndefined(options), comment });
    return unique;
  }

  target(name: string, from: string, output?: string): void {
    const other = this.targets.find((target) => target.name === name);
    if (other && (other.from !== from || other.output !== output)) throw new Error(`two outputs are both named ${name}`);
    if (!other) this.targets.push({ name, from, output });
  }

  /** Calls the steps (building the graph) and returns these targets, as a config's `targets` would. */
  instantiate(targets: readonly PlannedTarget[] = this.targets): Targets {
    const values = new Map<string, unknown>();
    for (const call of this.calls) {
      const step = STEPS[call.step] as unknown as (...args: unknown[]) => unknown;
      const options = { ...call.options };
      values.set(call.name, call.input === undefined ? step(options) : step(values.get(call.input), options));
    }
    const artifacts: Targets = {};
    for (const target of targets) {
      const value = values.get(target.from);
      artifacts[target.name] = (target.output === undefined ? value : (value as Record<string, Artifact>)[target.output]) as Artifact;
    }
    return artifacts;
  }
}

function withoutUndefined(options: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
}
