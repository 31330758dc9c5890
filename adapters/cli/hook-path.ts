/** Where the package installs the libvirt hook (CONTRACTS: libvirt hook). */
export const DEFAULT_HOOK_PATH = '/etc/libvirt/hooks/qemu.d/ctmigrate';
