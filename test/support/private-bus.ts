import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DbusDaemonProcess } from '../../adapters/dbus/dbus-daemon-process';

/** A dbus-daemon of a test's own, in a fresh folder removed by stop(). */
export interface PrivateBus {
  /** D-Bus address to connect to (unix:path=...). */
  address: string;
  socketPath: string;
  dir: string;
  stop(): Promise<void>;
}

export interface PrivateBusOptions {
  /**
   * `open`: anyone may own and call anything (a session bus).
   * `system`: the system bus's default policy (deny own, deny method calls,
   * signals and replies allowed), with the `include`d policy files on top.
   */
  policy?: 'open' | 'system';
  /** Bus config files to <include> (absolute paths), e.g. packaging/dbus/org.ctmigrate1.conf. */
  include?: string[];
}

const OPEN_POLICY = `
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>`;

// The default policy of Debian's /usr/share/dbus-1/system.conf, so a policy
// file is tested against what it meets on a real host.
const SYSTEM_POLICY = `
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>`;

/** Start a private bus; the folder is world-readable so tests can call in as `nobody`. */
export async function startPrivateBus(options: PrivateBusOptions = {}): Promise<PrivateBus> {
  const dir = mkdtempSync(join(tmpdir(), 'ctmigrate-bus-'));
  chmodSync(dir, 0o755);
  const socketPath = join(dir, 'bus.sock');
  const includes = (options.include ?? []).map((f) => `  <include>${f}</include>`).join('\n');
  const config = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path=${socketPath}</listen>
  <auth>EXTERNAL</auth>
${options.policy === 'system' ? SYSTEM_POLICY : OPEN_POLICY}
${includes}
</busconfig>
`;
  const configFile = join(dir, 'bus.conf');
  writeFileSync(configFile, config);
  const daemon = new DbusDaemonProcess(configFile);
  try {
    await daemon.start();
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    address: `unix:path=${socketPath}`,
    socketPath,
    dir,
    async stop() {
      await daemon.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
