/** A block request the blocker refuses before asking the kernel: nothing changed. */
export class BlockRequestError extends Error {
  constructor(
    readonly vm: string,
    readonly reason: string,
  ) {
    super(`cannot block VM ${JSON.stringify(vm)}: ${reason}; nothing changed`);
    this.name = 'BlockRequestError';
  }
}
