// SBOM checks the tests share: the official SPDX 2.3 JSON schema, validated with ajv.

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv } from "ajv";
import { SHARED } from "./helpers.js";

/** The official SPDX 2.3 JSON schema: in the workplace's shared/ folder, or where OSBUILD_SPDX_SCHEMA says. */
const SPDX_SCHEMA = process.env.OSBUILD_SPDX_SCHEMA ?? join(SHARED, "schemas", "spdx-2.3.schema.json");

/** Validates SPDX JSON against the official schema with ajv (draft-07). */
export function spdxValidator(): (document: unknown) => string | undefined {
  if (!existsSync(SPDX_SCHEMA)) throw new Error(`the SPDX 2.3 schema is not at ${SPDX_SCHEMA}: set OSBUILD_SHARED to the workplace's shared/ folder, or OSBUILD_SPDX_SCHEMA to the schema`);
  const validate = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(readFileSync(SPDX_SCHEMA, "utf8")) as object);
  return (document) => (validate(document) ? undefined : JSON.stringify(validate.errors).slice(0, 2000));
}

export function sha256Of(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

