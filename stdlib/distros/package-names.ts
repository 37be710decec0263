// The grammar of package names (with the version and architecture qualifiers each package
// manager takes), so that a package list is checked when the config is read, and a name
// can never be taken for an option or split into two by the tool that receives it.

export type PackageFormat = "deb" | "apk" | "rpm";

const GRAMMARS: Record<PackageFormat, { pattern: RegExp; says: string }> = {
  // Debian policy 5.6.1 and 5.6.12; apt's name:arch, name=version and name/release.
  deb: {
    pattern: /^[a-z0-9][a-z0-9+.-]+(:[a-z0-9][a-z0-9-]*)?(=([0-9]+:)?[0-9][A-Za-z0-9.+~-]*|\/[a-z0-9][a-z0-9.-]*)?$/,
    says: "a Debian package is name[:arch][=version] or name/release, the name of lowercase letters, digits, '+', '-' and '.', starting with a letter or digit",
  },
  // apk: a name, optionally a version constraint and a repository tag.
  apk: {
    pattern: /^[A-Za-z0-9][A-Za-z0-9_.+-]*((=|~|>=|<=|>|<|~=)[0-9][A-Za-z0-9._+-]*)?(@[A-Za-z0-9._-]+)?$/,
    says: "an Alpine package is name[=version][@tag], the name of letters, digits, '_', '.', '+' and '-', starting with a letter or digit",
  },
  // rpm/dnf: name, or name-version-release.arch.
  rpm: {
    pattern: /^[A-Za-z0-9_+][A-Za-z0-9._+-]*$/,
    says: "an RPM package is name or name-version-release.arch, of letters, digits, '_', '.', '+' and '-', not starting with '-' or '.'",
  },
};

/** Why `spec` is not a package name of `format`, or undefined when it is one. */
export function packageNameProblem(format: PackageFormat, spec: unknown): string | undefined {
  const grammar = GRAMMARS[format];
  if (typeof spec !== "string") return `package ${JSON.stringify(spec)} is not a string`;
  if (spec.length > 256 || !grammar.pattern.test(spec)) return `${JSON.stringify(spec)} is not a package name: ${grammar.says}`;
  return undefined;
}
