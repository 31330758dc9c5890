// The shared connection table's header: Int32 words at the start of its
// SharedArrayBuffer, read by the table (the one writer) and its cursors
// (readers, on any thread).

// Header words (Int32 indices).
export const H_MAGIC = 0;
export const H_CAPACITY = 1;
export const H_EXT_CAPACITY = 2;
export const H_BUCKETS = 3;
export const H_HIGH_WATER = 4;
export const H_EXT_HIGH_WATER = 5;
export const H_LIVE = 6;
export const H_TOMBSTONES = 7;
export const H_VERSION_LO = 8;
export const H_VERSION_HI = 9;
export const H_FREE_HEAD = 10;
export const H_EXT_FREE_HEAD = 11;
/** Slots of the change ring (a power of two; 0 = no ring). */
export const H_RING_SIZE = 12;
/** H_RING_SIZE - 1. */
export const H_RING_MASK = 13;
export const H_WORDS = 16;
export const HEADER_BYTES = H_WORDS * 4;
export const MAGIC = 0x43544d54; // "CTMT"
