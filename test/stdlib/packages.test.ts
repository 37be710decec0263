// Reading what a bootstrap leaves: apt's list files (named as apt names them) for each
// mirror suite's release file and each package's download location, and dpkg's status.

import { createHash } from "node:crypto";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { aptListName, parseMirrorLine, readAptLists } from "../../stdlib/bootstrap/apt-lists.js";
import { parseDpkgStatus } from "../../stdlib/packages/dpkg.js";
import { downloadKey } from "../../stdlib/packages/index.js";
import { tempDir, writeFiles } from "../helpers.js";

describe("apt lists", () => {
  it("names list files as apt does", () => {
    expect(aptListName("http://deb.debian.org/debian/dists/bookworm/InRelease")).toBe("deb.debian.org_debian_dists_bookworm_InRelease");
    expect(aptListName("https://user:secret@mirror.example:8080/my_debian/dists/sid/main/binary-amd64/Packages")).toBe("mirror.example:8080_my%5fdebian_dists_sid_main_binary-amd64_Packages");
    expect(aptListName("file:///srv/mirror/dists/bookworm/Release")).toBe("_srv_mirror_dists_bookworm_Release");
    expect(parseMirrorLine("deb [signed-by=/k.gpg] http://deb.debian.org/debian/ bookworm main contrib")).toEqual({ uri: "http://deb.debian.org/debian", suite: "bookworm", components: ["main", "contrib"] });
  });

  it("reads each suite's release file and where the installed packages came from, and nothing it should not trust", () => {
    const lists = tempDir("apt-lists");
    const release = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nSuite: stable\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n";
    const sha = "a".repeat(64);
    writeFiles(lists, {
      "deb.debian.org_debian_dists_bookworm_InRelease": release,
      "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages": [
        `Package: chrony\nVersion: 4.3-2\nArchitecture: amd64\nFilename: pool/main/c/chrony/chrony_4.3-2_amd64.deb\nSHA256: ${sha}\n`,
        `Package: chrony\nVersion: 4.2-1\nArchitecture: amd64\nFilename: pool/main/c/chrony/chrony_4.2-1_amd64.deb\n`,
        `Package: evil\nVersion: 1\nArchitecture: amd64\nFilename: ../../etc/passwd\nSHA256: not-a-digest\n`,
        `Package: unwanted\nVersion: 1\nArchitecture: amd64\nFilename: pool/main/u/unwanted_1_amd64.deb\n`,
      ].join("\n"),
    });
    const reading = readAptLists(lists, ["deb http://deb.debian.org/debian bookworm main", "deb http://deb.debian.org/debian bookworm-updates main"], "amd64", new Set(["chrony", "evil"]));
    expect(reading.snapshots).toEqual([
      {
        name: "http://deb.debian.org/debian bookworm",
        uri: "http://deb.debian.org/debian/dists/bookworm/InRelease",
        digest: { sha256: createHash("sha256").update(release).digest("hex") },
        annotations: { components: "main", origin: "Debian", suite: "stable", codename: "bookworm", date: "Sat, 11 Jul 2026 10:16:37 UTC" },
      },
      // a suite apt left no list for is named, without a digest
      { name: "http://deb.debian.org/debian bookworm-updates", uri: "http://deb.debian.org/debian/dists/bookworm-updates/InRelease" },
    ]);
    expect([...reading.downloads]).toEqual([
      [downloadKey("chrony", "4.3-2", "amd64"), { url: "http://deb.debian.org/debian/pool/main/c/chrony/chrony_4.3-2_amd64.deb", sha256: sha }],
      [downloadKey("chrony", "4.2-1", "amd64"), { url: "http://deb.debian.org/debian/pool/main/c/chrony/chrony_4.2-1_amd64.deb" }],
    ]);
    expect(readAptLists(join(lists, "missing"), ["deb http://deb.debian.org/debian bookworm main"], "amd64", new Set()).downloads.size).toBe(0);
  });

  it("reads a Packages file of many MiB in pieces: blocks across the pieces' edges, and past a block too long to be apt's", () => {
    const lists = tempDir("apt-lists-big");
    const MiB = 1 << 20;
    const block = (name: string, pad = 0): string => `Package: ${name}\nVersion: 1.0\nArchitecture: amd64\nFilename: pool/main/${name}.deb\nDescription: ${"x".repeat(pad)}`;
    // The first block ends one byte before the first piece does, so its "\n\n" is cut in two.
    const first = block("edge");
    const blocks = [block("edge", MiB - 1 - first.length)];
    for (let index = 0; index < 4000; index++) blocks.push(block(`p${index}`, (index * 7919) % 1500));
    blocks.push(block("huge", 17 * MiB)); // over 16 MiB: skipped, and what follows is still read
    for (let index = 4000; index < 4100; index++) blocks.push(block(`p${index}`, index % 300));
    const text = `${blocks.join("\n\n")}\n`;
    expect(text.indexOf("\n\n")).toBe(MiB - 1);
    writeFiles(lists, { "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages": text });
    const wanted = new Set(["edge", "huge", ...Array.from({ length: 4100 }, (_, index) => `p${index}`).filter((_, index) => index % 7 === 0 || index >= 4095)]);
    const reading = readAptLists(lists, ["deb http://deb.debian.org/debian bookworm main"], "amd64", wanted);
    const expected = [...wanted].filter((name) => name !== "huge").map((name) => [downloadKey(name, "1.0", "amd64"), { url: `http://deb.debian.org/debian/pool/main/${name}.deb` }]);
    expect([...reading.downloads].sort()).toEqual(expected.sort());
  });
});

describe("dpkg status", () => {
  it("takes each installed package's source package and version", () => {
    const status = [
      "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc (2.36-9+deb12u9)\nVersion: 2.36-9+deb12u9+b1",
      "Package: chrony\nStatus: install ok installed\nArchitecture: amd64\nSource: chrony\nVersion: 4.3-2",
      "Package: dash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 0.5.12-2",
      "Package: removed\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1",
    ].join("\n\n");
    expect(parseDpkgStatus(status)).toEqual([
      { name: "chrony", version: "4.3-2", architecture: "amd64", source: { name: "chrony", version: "4.3-2" } },
      { name: "dash", version: "0.5.12-2", architecture: "amd64", source: { name: "dash", version: "0.5.12-2" } },
      { name: "libc6", version: "2.36-9+deb12u9+b1", architecture: "amd64", source: { name: "glibc", version: "2.36-9+deb12u9" } },
    ]);
  });
});
