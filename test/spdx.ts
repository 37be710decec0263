// SBOM checks the tests share: the official SPDX 2.3 JSON schema, validated with ajv.

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv } from "ajv";
import { REPO } from "./helpers.js";

/** The official SPDX 2.3 JSON schema: in shared/ beside the checkout (as CI has it), or where OSBUILD_SPDX_SCHEMA says. */
const SPDX_SCHEMA = process.env.OSBUILD_SPDX_SCHEMA ?? join(REPO, "..", "shared", "schemas", "spdx-2.3.schema.json");

/** Validates SPDX JSON against the official schema with ajv (draft-07). */
export function spdxValidator(): (document: unknown) => string | undefined {
  if (!existsSync(SPDX_SCHEMA)) throw new Error(`the SPDX 2.3 schema is not at ${SPDX_SCHEMA}: CI has shared/ beside the checkout; elsewhere set OSBUILD_SPDX_SCHEMA`);
  const validate = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(readFileSync(SPDX_SCHEMA, "utf8")) as object);
  return (document) => (validate(document) ? undefined : JSON.stringify(validate.errors).slice(0, 2000));
}

export function sha256Of(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

