import { strict as assert } from 'node:assert';
import { NftError, nftMessage } from '../../../adapters/nftables/nft-error';
import { nftProcess } from '../../../adapters/nftables/nft-runner';

// The real process runner, with stand-in programs for nft.
describe('nft process runner', () => {
  it('hands stdin over as a file that /dev/stdin opens (nft -f - opens it; a socket would fail with ENXIO)', async () => {
    const run = nftProcess({ nftPath: 'sh' });
    const r = await run(['-c', 'cat /dev/stdin'], '{"nftables":[]}');
    assert.deepEqual(r, { stdout: '{"nftables":[]}', stderr: '', code: 0 });
  });

  it('puts the exec prefix in front of nft', async () => {
    const run = nftProcess({ execPrefix: ['env', 'CTM_PREFIX=yes'], nftPath: 'sh' });
    const r = await run(['-c', 'echo $CTM_PREFIX'], '');
    assert.equal(r.stdout, 'yes\n');
  });

  it('kills nft after the timeout and says so', async () => {
    const run = nftProcess({ nftPath: 'sleep', timeoutMs: 100 });
    const started = Date.now();
    const r = await run(['10'], '');
    assert.equal(r.failure, 'timeout');
    assert.equal(r.code, null);
    assert.ok(Date.now() - started < 5_000);
  });

  it('reports a missing binary as a spawn failure', async () => {
    const r = await nftProcess({ nftPath: '/nonexistent/nft' })(['-j', 'list', 'tables'], '');
    assert.equal(r.failure, 'spawn');
    const e = NftError.from('list the blocked VMs', r, 'nothing changed', 'nothing changed');
    assert.match(e.message, /^could not run nft to list the blocked VMs: spawn \/nonexistent\/nft ENOENT; nothing changed$/);
  });

  it('turns nft\'s stderr into one line without the location prefix', () => {
    const stderr = 'internal:0:0-0: Error: Could not process rule: No such file or directory\n\ninternal:0:0-0: Error: Parsing command array at index 1 failed.\n\n';
    assert.equal(nftMessage({ stdout: '', stderr, code: 1 }), 'Could not process rule: No such file or directory / Parsing command array at index 1 failed.');
    assert.equal(nftMessage({ stdout: '', stderr: '', code: 1 }), 'exit status 1 without a message');
  });
});
