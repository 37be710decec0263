// Master Boot Record (the "dos" / "msdos" partition table) in sector 0 of a disk image.
//
// Only what a Kata guest image needs: up to four primary partitions, no extended partitions,
// no boot code (the guest kernel is booted directly by the hypervisor). Layout of the sector:
//   0..439    boot code (left zero)
//   440..443  disk signature (little-endian), shown by fdisk as "Disk identifier: 0x..."
//   444..445  zero ("copy protected" marker, unused)
//   446..509  four 16-byte partition entries
//   510..511  0x55 0xAA

export const SECTOR_SIZE = 512;
export const MBR_TYPE_LINUX = 0x83;
export const MBR_TYPE_GPT_PROTECTIVE = 0xee;

const DISK_SIGNATURE_OFFSET = 440;
const PARTITION_TABLE_OFFSET = 446;
const ENTRY_SIZE = 16;
const MAX_PARTITIONS = 4;
const BOOT_SIGNATURE_OFFSET = 510;
const BOOTABLE = 0x80;

// The geometry fdisk, sfdisk and parted assume for an image file: CHS values only matter to
// tools that cross-check them against the LBA fields, and those check against this geometry.
const HEADS = 255;
const SECTORS_PER_TRACK = 63;
const MAX_CYLINDER = 1023;

export interface MbrPartition {
  /** First sector of the partition. */
  startLba: number;
  /** Length in sectors. */
  sizeLba: number;
  /** System id, e.g. 0x83 (Linux) or 0xEE (GPT protective). */
  type: number;
  /** The "active" flag (0x80); only legacy BIOS boot loaders look at it. */
  bootable?: boolean;
}

export interface Mbr {
  diskSignature: number;
  partitions: MbrPartition[];
}

/**
 * The 512-byte sector 0 holding `partitions` in entries 1..n (unused entries stay zero).
 *
 * CHS fields are computed from the LBA with 255 heads and 63 sectors per track, as
 * libfdisk does; an address beyond cylinder 1023 is written as the conventional maximum
 * (1023, 254, 63), i.e. bytes FE FF FF. With that, `sfdisk --verify` finds no
 * "different physical/logical" mismatch on small images and nothing to report on large ones,
 * and the sector is byte-identical to what sfdisk writes for the same table.
 */
export function encodeMbr(partitions: readonly MbrPartition[], options: { diskSignature: number }): Buffer {
  if (partitions.length > MAX_PARTITIONS) throw new RangeError(`an MBR holds at most ${MAX_PARTITIONS} primary partitions, got ${partitions.length}`);
  checkUint32(options.diskSignature, "disk signature");
  const sector = Buffer.alloc(SECTOR_SIZE);
  sector.writeUInt32LE(options.diskSignature, DISK_SIGNATURE_OFFSET);
  partitions.forEach((partition, index) => {
    checkPartition(partition, index);
    for (const other of partitions.slice(0, index)) {
      if (partition.startLba < other.startLba + other.sizeLba && other.startLba < partition.startLba + partition.sizeLba) {
        throw new RangeError(`MBR partition ${index + 1} overlaps an earlier partition`);
      }
    }
    const entry = PARTITION_TABLE_OFFSET + index * ENTRY_SIZE;
    sector[entry] = partition.bootable ? BOOTABLE : 0;
    encodeChs(partition.startLba).copy(sector, entry + 1);
    sector[entry + 4] = partition.type;
    encodeChs(partition.startLba + partition.sizeLba - 1).copy(sector, entry + 5);
    sector.writeUInt32LE(partition.startLba, entry + 8);
    sector.writeUInt32LE(partition.sizeLba, entry + 12);
  });
  sector[BOOT_SIGNATURE_OFFSET] = 0x55;
  sector[BOOT_SIGNATURE_OFFSET + 1] = 0xaa;
  return sector;
}

/** Reads sector 0 back; entries with type 0 are unused and left out. CHS fields are ignored. */
export function parseMbr(sector: Buffer): Mbr {
  if (sector.length < SECTOR_SIZE) throw new RangeError(`an MBR is ${SECTOR_SIZE} bytes, got ${sector.length}`);
  if (sector[BOOT_SIGNATURE_OFFSET] !== 0x55 || sector[BOOT_SIGNATURE_OFFSET + 1] !== 0xaa) throw new Error("no MBR: sector 0 does not end with 55 AA");
  const partitions: MbrPartition[] = [];
  for (let index = 0; index < MAX_PARTITIONS; index++) {
    const entry = PARTITION_TABLE_OFFSET + index * ENTRY_SIZE;
    const type = sector[entry + 4] ?? 0;
    if (type === 0) continue;
    const partition: MbrPartition = { startLba: sector.readUInt32LE(entry + 8), sizeLba: sector.readUInt32LE(entry + 12), type };
    if ((sector[entry] ?? 0) & BOOTABLE) partition.bootable = true;
    partitions.push(partition);
  }
  return { diskSignature: sector.readUInt32LE(DISK_SIGNATURE_OFFSET), partitions };
}

/** The three CHS bytes of an entry: head, sector | (cylinder bits 8-9 << 6), cylinder bits 0-7. */
function encodeChs(lba: number): Buffer {
  let cylinder = Math.floor(lba / (HEADS * SECTORS_PER_TRACK));
  let head = Math.floor(lba / SECTORS_PER_TRACK) % HEADS;
  let sector = (lba % SECTORS_PER_TRACK) + 1;
  if (cylinder > MAX_CYLINDER) {
    cylinder = MAX_CYLINDER;
    head = HEADS - 1;
    sector = SECTORS_PER_TRACK;
  }
  return Buffer.from([head, sector | ((cylinder >> 2) & 0xc0), cylinder & 0xff]);
}

function checkPartition(partition: MbrPartition, index: number): void {
  const label = `MBR partition ${index + 1}`;
  checkUint32(partition.startLba, `${label} start`);
  checkUint32(partition.sizeLba, `${label} size`);
  if (partition.startLba < 1) throw new RangeError(`${label} must not include sector 0`);
  if (partition.sizeLba < 1) throw new RangeError(`${label} is empty`);
  if (partition.startLba + partition.sizeLba > 2 ** 32) throw new RangeError(`${label} ends beyond the 2^32 sectors an MBR can address`);
  if (!Number.isInteger(partition.type) || partition.type < 1 || partition.type > 0xff) throw new RangeError(`${label} type ${partition.type} is not a byte (0 marks an unused entry)`);
}

function checkUint32(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`${what} ${value} does not fit in 32 bits`);
}
