// Exits the process (process.exit(0)) while the conntrack writer threads are
// in the middle of a bulk create: the binding must tear down an open socket
// with a send or receive in flight without aborting the process.
//   node exit-mid-write.js ENTRIES DELAY_MS
import 'reflect-metadata';
import { ConntrackNetlink } from '../../../adapters/conntrack/conntrack-netlink';
import { warmUpTable } from '../../../plugin/warm-up';

const entries = Number(process.argv[2] ?? 100_000);
const delayMs = Number(process.argv[3] ?? 50);
const table = warmUpTable(entries);
const port = new ConntrackNetlink({ writerThread: true });
let done = 0;
void port.create({ table }, (d) => {
  done = d;
});
setTimeout(() => {
  process.stdout.write(`exiting after ${done} of ${entries} entries\n`);
  process.exit(0);
}, delayMs);
