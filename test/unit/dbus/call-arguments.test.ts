import { strict as assert } from 'node:assert';
import { finishResultArgument, formatMark, InvalidArgsError, parseMarkArgument, parseZoneArgument, vmSpecArguments } from '../../../adapters/dbus/call-arguments';
import { sessionObjectPath } from '../../../adapters/dbus/names';

describe('D-Bus call arguments', () => {
  it('reads marks as VALUE[/MASK], decimal or hex, mask defaulting to all ones', () => {
    assert.equal(parseMarkArgument(''), undefined);
    assert.deepEqual(parseMarkArgument('5'), { value: 5, mask: 0xffffffff });
    assert.deepEqual(parseMarkArgument('0x10/0xF0'), { value: 0x10, mask: 0xf0 });
    assert.equal(formatMark({ value: 0x10, mask: 0xf0 }), '0x10/0xf0');
    for (const bad of ['x', '1/2/3', '0x100000000', '3/1', '-1']) assert.throws(() => parseMarkArgument(bad), InvalidArgsError, bad);
  });

  it('reads zone -1 as none and refuses zones outside 0-65535', () => {
    assert.equal(parseZoneArgument(-1), undefined);
    assert.equal(parseZoneArgument(0), 0);
    assert.throws(() => parseZoneArgument(65536), InvalidArgsError);
    assert.throws(() => parseZoneArgument(-2), InvalidArgsError);
  });

  it('turns the domain’s VM checks into InvalidArgs', () => {
    assert.throws(() => vmSpecArguments('0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0', [], -1, ''), InvalidArgsError);
    assert.throws(() => vmSpecArguments('zz', ['192.0.2.1'], -1, ''), InvalidArgsError);
  });

  it('accepts only migrated or failed as a result', () => {
    assert.equal(finishResultArgument('migrated'), 'migrated');
    assert.throws(() => finishResultArgument('ok'), InvalidArgsError);
  });
});

describe('session object paths', () => {
  it('keep letters and digits and escape everything else, so distinct ids stay distinct', () => {
    assert.equal(sessionObjectPath('abc123'), '/org/ctmigrate1/session/abc123');
    assert.equal(sessionObjectPath('a-b'), '/org/ctmigrate1/session/a_2db');
    assert.equal(sessionObjectPath('a_b'), '/org/ctmigrate1/session/a_5fb');
    assert.equal(sessionObjectPath(''), '/org/ctmigrate1/session/_');
    assert.match(sessionObjectPath('ü/../x y'), /^\/org\/ctmigrate1\/session\/[A-Za-z0-9_]+$/);
  });
});
