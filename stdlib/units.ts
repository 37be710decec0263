// The systemd units osbuilder installs with systemd as init, as Kata ships them
// (src/agent/kata-agent.service.in with BINDIR=/usr/bin, src/agent/kata-containers.target),
// and rootfs.sh's fallback tmp.mount for distros whose systemd has none; where they and the
// agent go in the guest (paths relative to the rootfs).

/** Where osbuilder installs the agent. */
export const AGENT_PATH = "usr/bin/kata-agent";
/** Where osbuilder installs the units. */
export const UNIT_DIR = "usr/lib/systemd/system";
/** Where a distro's systemd binary is (either). */
export const SYSTEMD_PATHS = ["usr/lib/systemd/systemd", "lib/systemd/systemd"] as const;
/** rootfs.sh's links that have systemd start the agent: [link, target]. */
export const AGENT_UNIT_LINKS: ReadonlyArray<readonly [string, string]> = [
  ["etc/systemd/system/basic.target.wants/kata-containers.target", `/${UNIT_DIR}/kata-containers.target`],
  ["etc/systemd/system/kata-containers.target.wants/dbus.socket", `/${UNIT_DIR}/dbus.socket`],
];

export const KATA_AGENT_SERVICE = `#
# Copyright (c) 2018-2019 Intel Corporation
#
# SPDX-License-Identifier: Apache-2.0
#

[Unit]
Description=Kata Containers Agent
Documentation=https://github.com/kata-containers/kata-containers
Wants=kata-containers.target

[Service]
# Send agent output to tty to allow capture debug logs
# from a VM vsock port
StandardOutput=tty
Type=simple
ExecStart=/usr/bin/kata-agent
LimitNOFILE=1073741824
# ExecStop is required for static agent tracing; in all other scenarios
# the runtime handles shutting down the VM.
ExecStop=/bin/sync ; /usr/bin/systemctl --force poweroff
FailureAction=poweroff
# Discourage OOM-killer from touching the agent
OOMScoreAdjust=-997
`;

export const KATA_CONTAINERS_TARGET = `#
# Copyright (c) 2018-2019 Intel Corporation
#
# SPDX-License-Identifier: Apache-2.0
#

[Unit]
Description=Kata Containers Agent Target
Requires=basic.target
Requires=tmp.mount
Wants=chronyd.service
Requires=kata-agent.service
Conflicts=rescue.service rescue.target
After=basic.target rescue.service rescue.target
AllowIsolate=yes
`;

export const TMP_MOUNT = `#  This file is part of systemd.
#
#  systemd is free software; you can redistribute it and/or modify it
#  under the terms of the GNU Lesser General Public License as published by
#  the Free Software Foundation; either version 2.1 of the License, or
#  (at your option) any later version.

[Unit]
Description=Temporary Directory (/tmp)
Documentation=man:hier(7)
Documentation=https://www.freedesktop.org/wiki/Software/systemd/APIFileSystems
ConditionPathIsSymbolicLink=!/tmp
DefaultDependencies=no
Conflicts=umount.target
Before=local-fs.target umount.target
After=swap.target

[Mount]
What=tmpfs
Where=/tmp
Type=tmpfs
Options=mode=1777,strictatime,nosuid,nodev
`;
