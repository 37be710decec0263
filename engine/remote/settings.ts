// Where the shared cache is: the --cache-from / --cache-to references, checked before anything
// runs. Kept apart from the cache itself so that the command line can check them without
// loading the store.

import { RegistryError } from "../../registry/errors.js";
import { parseOciReference, type RepositoryRef } from "../../registry/reference.js";
import { ConfigError } from "../errors.js";

export interface SharedCacheSettings {
  /** oci:// references looked up, in order, after the local store. */
  from: readonly string[];
  /** The oci:// reference results are pushed to. */
  to?: string;
  /** A CA file trusted for the registries' TLS. */
  registryCa?: string;
  /** Plain HTTP to registries that are not on loopback. */
  plainHttp?: boolean;
}

/** The registries in the settings, checked: a bad reference is a usage error before anything runs. */
export function parseCacheRefs(settings: SharedCacheSettings): { from: RepositoryRef[]; to?: RepositoryRef } {
  const parse = (text: string, flag: string): RepositoryRef => {
    try {
      return parseOciReference(text);
    } catch (error) {
      if (error instanceof RegistryError) throw new ConfigError(`${flag} ${text}: ${error.message.replace(/^invalid registry reference '[^']*': /, "")}`, undefined, error.hint);
      throw error;
    }
  };
  return { from: settings.from.map((text) => parse(text, "cache-from")), ...(settings.to ? { to: parse(settings.to, "cache-to") } : {}) };
}
