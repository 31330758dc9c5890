import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Version from package.json (found relative to the built file, in a checkout and when installed). */
export function packageVersion(): string {
  for (const up of ['../../..', '../..']) {
    try {
      const pkg = JSON.parse(readFileSync(join(__dirname, up, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'ctmigrate' && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return 'unknown';
}
