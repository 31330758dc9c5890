// K busy TCP flows between the lab's client and its VM (flow-agent.ts does
// the work inside the namespaces): an echo server in the VM, a client that
// keeps every connection busy and reports which flows kept working and the
// longest time each went without an echo.

import { join } from 'node:path';
import { Lab, LabProcess, NetNs } from './netns';

/** Path of the compiled flow agent (it sits next to this file in dist/). */
export const FLOW_AGENT = join(__dirname, 'flow-agent.js');

/** What the client says about its flows (flows closed on purpose by churn are not counted). */
export interface FlowReport {
  /** Flows that should be alive: opened and not closed on purpose. */
  flows: number;
  /** Of those, the ones still echoing. */
  kept: number;
  /** Reset, closed by the other side, or no echo for the break time. */
  broken: number;
  /** Closed on purpose by churn. */
  closed: number;
  opened: number;
  echoes: number;
  /** Longest time a kept flow went without an echo since the last mark. */
  maxStallMs: number;
  medianStallMs: number;
  /** Why flows broke, with counts. */
  reasons: Record<string, number>;
}

export interface FlowOptions {
  /** The client's source address (must route to the VM and back). */
  source: string;
  /** The VM's address and port the echo server listens on. */
  server: string;
  port: number;
  /** Where the client connects when that is not server:port (a published port the host DNATs to it). */
  connect?: { host: string; port: number };
  count: number;
  /** No echo for this long = broken (default 5000 ms). */
  breakMs?: number;
}

/** The running flows; stopped with the lab. */
export class Flows {
  private constructor(
    readonly server: LabProcess,
    readonly client: LabProcess,
    readonly options: FlowOptions,
  ) {}

  /** Start the echo server in `vm` and `count` flows from `client`; resolves once all are connected. */
  static async start(lab: Lab, vm: NetNs, client: NetNs, options: FlowOptions): Promise<Flows> {
    const server = lab.spawn(vm, process.execPath, [FLOW_AGENT, 'server', options.server, String(options.port)]);
    await server.waitFor(/^ready \d+/m, 10_000);
    const cl = lab.spawn(client, process.execPath, [
      FLOW_AGENT,
      'client',
      options.source,
      options.connect?.host ?? options.server,
      String(options.connect?.port ?? options.port),
      String(options.count),
      String(options.breakMs ?? 5000),
    ]);
    await cl.waitFor(/^ready \d+/m, 30_000);
    return new Flows(server, cl, options);
  }

  /** Forget the gaps seen so far: the next report's stalls start here. */
  async mark(): Promise<void> {
    await this.command('mark', /^marked$/m);
  }

  /** Close n flows gracefully and open n new ones. */
  async churn(n: number): Promise<void> {
    await this.command(`churn ${n}`, new RegExp(`^churned ${n}$`, 'm'), 30_000);
  }

  async report(): Promise<FlowReport> {
    const m = await this.command('report', /^report (\{.*\})$/m);
    return JSON.parse(m[1] as string) as FlowReport;
  }

  async stop(): Promise<void> {
    await this.client.stop(1_000);
    await this.server.stop(1_000);
  }

  /** Send a command and wait for its answer, past every answer already printed. */
  private async command(line: string, answer: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    const before = this.client.stdout.length;
    this.client.send(line);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.client.stdout.slice(before).match(answer);
      if (m) return m;
      if (!this.client.running) throw new Error(`flow client exited: ${this.client.stderr.trim()}`);
      if (Date.now() > deadline) throw new Error(`flow client did not answer "${line}" within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
