// SPDX 2.3 JSON documents (the part osbuild writes): document, packages, files and
// relationships, and the identifier rules the schema and the spec set.

export const SPDX_VERSION = "SPDX-2.3";
export const SPDX_MEDIA_TYPE = "application/spdx+json";
export const DOCUMENT_ID = "SPDXRef-DOCUMENT";

export interface SpdxChecksum {
  algorithm: "SHA1" | "SHA256" | "SHA512" | "MD5";
  checksumValue: string;
}

export interface SpdxExternalRef {
  referenceCategory: "PACKAGE-MANAGER" | "SECURITY" | "PERSISTENT-ID" | "OTHER";
  referenceType: string;
  referenceLocator: string;
}

export interface SpdxPackage {
  SPDXID: string;
  name: string;
  versionInfo?: string;
  /** A URL, or "NOASSERTION" when it is not known. */
  downloadLocation: string;
  filesAnalyzed: boolean;
  supplier?: string;
  checksums?: SpdxChecksum[];
  sourceInfo?: string;
  primaryPackagePurpose?: "APPLICATION" | "FRAMEWORK" | "LIBRARY" | "CONTAINER" | "OPERATING-SYSTEM" | "DEVICE" | "FIRMWARE" | "SOURCE" | "ARCHIVE" | "FILE" | "INSTALL" | "OTHER";
  externalRefs?: SpdxExternalRef[];
  comment?: string;
}

export interface SpdxFile {
  SPDXID: string;
  /** Relative to the root of what the document describes: "./sbin/init". */
  fileName: string;
  /** SHA1 is mandatory in SPDX 2.3. */
  checksums: SpdxChecksum[];
  comment?: string;
}

export type SpdxRelationshipType = "DESCRIBES" | "CONTAINS" | "GENERATED_FROM" | "DESCENDANT_OF" | "DEPENDS_ON" | "OTHER";

export interface SpdxRelationship {
  spdxElementId: string;
  relationshipType: SpdxRelationshipType;
  relatedSpdxElement: string;
  comment?: string;
}

export interface SpdxDocument {
  spdxVersion: typeof SPDX_VERSION;
  dataLicense: "CC0-1.0";
  SPDXID: typeof DOCUMENT_ID;
  name: string;
  documentNamespace: string;
  creationInfo: { created: string; creators: string[]; comment?: string };
  packages: SpdxPackage[];
  files: SpdxFile[];
  relationships: SpdxRelationship[];
}

/**
 * An SPDX element id ("SPDXRef-" then letters, digits, "." and "-") for `label`, made unique
 * by a digest of `identity` (so two packages whose names differ only in a "+" stay apart).
 */
export function spdxId(kind: string, label: string, identityHex: string): string {
  const clean = label.replace(/[^A-Za-z0-9.-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 80);
  return `SPDXRef-${kind}-${clean ? `${clean}-` : ""}${identityHex.slice(0, 12)}`;
}

/** SPDX's date form, YYYY-MM-DDThh:mm:ssZ, of seconds since the epoch. */
export function spdxDate(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** "NOASSERTION" unless `location` looks like a URL a tool can fetch. */
export function downloadLocationOf(location: string | undefined): string {
  return location !== undefined && /^[a-z][a-z0-9+.-]*:\/\/\S+$/i.test(location) ? location : "NOASSERTION";
}
