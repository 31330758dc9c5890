/**
 * What the netlink reader thread and its ThreadedNetlinkSocket say to each
 * other. Kept apart from the thread's entry file, which starts the reader
 * as soon as it is loaded.
 */

/** How the socket is opened; `control` reports the outcome synchronously. */
export interface ReaderData {
  protocol: number;
  receiveBytes: number;
  recvBufferSize?: number;
  sendBufferSize?: number;
  groups: number[];
  /** Use SO_RCVBUFFORCE for recvBufferSize (root). */
  forceRecvBuffer: boolean;
  /** Int32 [state (0 pending, 1 open, -1 failed), rcvbuf, sndbuf, textLength] then UTF-8 error text. */
  control: SharedArrayBuffer;
}

/** Reader → decoder. */
export type ReaderMessage =
  | { k: 'data'; b: ArrayBuffer; d: boolean | undefined }
  | { k: 'truncated' }
  | { k: 'error'; errno: number; code: string; syscall: string; message: string }
  | { k: 'sent'; id: number; errno: number; code: string; message: string };

/** Decoder → reader. */
export type ReaderCommand = { k: 'send'; id: number; b: ArrayBuffer } | { k: 'close' };

export const CONTROL_TEXT_OFFSET = 16;

