import { Histogram } from 'prom-client';
import { VmStateHandler, VmStateHelper, VmStatePort } from '../../plugin/ports/vmstate-port';

/**
 * A VmStatePort whose handlers are timed: how long QEMU waited on Save()
 * and Load(), the moments a VM is paused for ctmigrate, into histograms
 * labelled by result (ok, error).
 */
export class TimedVmStatePort implements VmStatePort {
  constructor(
    private readonly inner: VmStatePort,
    private readonly saveSeconds: Histogram<'result'>,
    private readonly loadSeconds: Histogram<'result'>,
  ) {}

  attach(uuid: string, handler: VmStateHandler): Promise<VmStateHelper> {
    return this.inner.attach(uuid, {
      save: () => timed(this.saveSeconds, () => handler.save()),
      load: (blob) => timed(this.loadSeconds, () => handler.load(blob)),
    });
  }

  detach(uuid: string): Promise<void> {
    return this.inner.detach(uuid);
  }

  objectArgs(uuid: string): string {
    return this.inner.objectArgs(uuid);
  }
}

async function timed<T>(h: Histogram<'result'>, fn: () => Promise<T>): Promise<T> {
  const start = process.hrtime.bigint();
  const seconds = (): number => Number(process.hrtime.bigint() - start) / 1e9;
  try {
    const v = await fn();
    h.observe({ result: 'ok' }, seconds());
    return v;
  } catch (e) {
    h.observe({ result: 'error' }, seconds());
    throw e;
  }
}
