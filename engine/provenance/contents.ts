// What a rootfs holds according to the steps that made it: the package databases they read
// (a later reading of a database replaces an earlier one), the components they added, and
// which package owns a path as of a given step.

import type { Component } from "../types.js";
import type { ChainStep } from "./lineage.js";

export interface OwnedBy {
  database: string;
  component: Component;
}

function identity(component: Component): string {
  return `${component.name}\0${component.version}\0${component.architecture ?? ""}`;
}

/** Fields a later reading lacks (a download location only the bootstrap knew) come from the earlier one of the same package. */
function mergeReading(earlier: readonly Component[] | undefined, later: readonly Component[]): Component[] {
  const known = new Map((earlier ?? []).map((component) => [identity(component), component]));
  return later.map((component) => ({ ...known.get(identity(component)), ...component }));
}

/** The packages and components a chain's rootfs holds, as of its top. */
export function componentsOf(chain: readonly ChainStep[]): Array<OwnedBy> {
  const databases = new Map<string, Component[]>();
  const added = new Map<string, Component>();
  for (const step of chain) {
    for (const [name, packages] of Object.entries(step.provenance?.databases ?? {})) databases.set(name, mergeReading(databases.get(name), packages));
    for (const component of step.provenance?.components ?? []) added.set(identity(component), component);
  }
  const owned: OwnedBy[] = [];
  for (const [database, packages] of [...databases].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) for (const component of packages) owned.push({ database, component });
  for (const component of added.values()) owned.push({ database: "", component });
  return owned;
}

/** Who owns which path according to the package databases read by chain steps, looked up by position. */
export class PathOwners {
  private readonly indexes = new Map<number, Map<string, OwnedBy[]>>();

  constructor(private readonly chain: readonly ChainStep[]) {}

  /** The owners of `path` (several for a shared directory) per the first database reading at or above chain step `position`. */
  atOrAbove(position: number, path: string): OwnedBy[] {
    for (let index = position; index < this.chain.length; index++) if (this.hasReading(index)) return this.index(index).get(path) ?? [];
    return [];
  }

  /** The owners of `path` per the nearest database reading below chain step `position`, or undefined when there is none. */
  below(position: number, path: string): OwnedBy[] | undefined {
    for (let index = position - 1; index >= 0; index--) if (this.hasReading(index)) return this.index(index).get(path) ?? [];
    return undefined;
  }

  private hasReading(index: number): boolean {
    return Object.keys(this.chain[index]!.provenance?.databases ?? {}).length > 0;
  }

  private index(position: number): Map<string, OwnedBy[]> {
    let index = this.indexes.get(position);
    if (!index) {
      index = new Map();
      for (const [database, packages] of Object.entries(this.chain[position]!.provenance?.databases ?? {})) {
        for (const component of packages) {
          for (const path of component.files ?? []) {
            const owners = index.get(path);
            if (owners) owners.push({ database, component });
            else index.set(path, [{ database, component }]);
          }
        }
      }
      this.indexes.set(position, index);
    }
    return index;
  }
}
