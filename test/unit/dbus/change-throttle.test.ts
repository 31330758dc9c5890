import { strict as assert } from 'node:assert';
import * as sinon from 'sinon';
import { ChangeThrottle } from '../../../adapters/dbus/change-throttle';

describe('ChangeThrottle', () => {
  let clock: sinon.SinonFakeTimers;
  beforeEach(() => {
    clock = sinon.useFakeTimers({ now: 1000 });
  });
  afterEach(() => clock.restore());

  it('emits the first change at once and a burst once more at the end of the interval', () => {
    const emit = sinon.spy();
    const t = new ChangeThrottle(100, emit);
    t.poke();
    assert.equal(emit.callCount, 1);
    for (let i = 0; i < 1000; i++) t.poke();
    assert.equal(emit.callCount, 1);
    clock.tick(99);
    assert.equal(emit.callCount, 1);
    clock.tick(1);
    assert.equal(emit.callCount, 2);
    clock.tick(1000);
    assert.equal(emit.callCount, 2);
  });

  it('flush emits now and drops the pending emit', () => {
    const emit = sinon.spy();
    const t = new ChangeThrottle(100, emit);
    t.poke();
    t.poke();
    t.flush();
    assert.equal(emit.callCount, 2);
    clock.tick(500);
    assert.equal(emit.callCount, 2);
  });

  it('cancel drops the pending emit without emitting', () => {
    const emit = sinon.spy();
    const t = new ChangeThrottle(100, emit);
    t.poke();
    t.poke();
    t.cancel();
    clock.tick(500);
    assert.equal(emit.callCount, 1);
  });
});
