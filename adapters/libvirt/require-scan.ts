import { CTMIGRATE_NS } from './domain-xml';

/**
 * Whether text we refused to parse looks like a domain that carries
 * `<ctmigrate:require/>`. A plain text scan (nothing is expanded or
 * resolved), used only to fail closed: a migration the operator marked as
 * needing its connection state is refused rather than run without it.
 */
export function looksRequired(text: string): boolean {
  return text.includes(CTMIGRATE_NS) && /<(?:[A-Za-z_][\w.-]*:)?require[\s/>]/.test(text);
}
