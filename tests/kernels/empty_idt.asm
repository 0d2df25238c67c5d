; The smallest kernel that triple-faults: load an IDT with limit 0, then
; execute an undefined instruction.
;
;   nasm -f bin -o empty_idt.bin empty_idt.asm
;   qemu-system-x86_64 -kernel empty_idt.bin -d int,cpu_reset -D int.log \
;       -no-reboot -no-shutdown
;
; QEMU's -kernel loads a Multiboot (v1) image: the header below, within the
; first 8 KiB, with the a.out kludge (flag 16) giving the load addresses, so
; a flat binary needs no ELF.  The loader enters `start` in 32-bit protected
; mode, paging off, with EAX = 0x2badb002 (Multiboot Specification 0.6.96,
; 3.1 "OS image format", 3.2 "Machine state").
;
; ud2 raises #UD (vector 6).  An 8-byte protected-mode gate for vector 6
; needs IDTR.limit >= 6 * 8 + 7; with limit 0 the CPU raises #GP with error
; code 6 * 8 + 2 (IDT bit set; Intel SDM Vol. 3A 6.13), whose gate is past
; the limit too: a contributory fault while delivering a contributory one is
; a #DF (SDM 6.15, table 6-5), whose gate is past the limit as well: shutdown.
bits 32
org 0x100000

MULTIBOOT_MAGIC equ 0x1BADB002
MULTIBOOT_AOUT_KLUDGE equ 1 << 16

header:
    dd MULTIBOOT_MAGIC
    dd MULTIBOOT_AOUT_KLUDGE
    dd -(MULTIBOOT_MAGIC + MULTIBOOT_AOUT_KLUDGE)   ; checksum: the three sum to 0
    dd header                                       ; header_addr
    dd header                                       ; load_addr
    dd end                                          ; load_end_addr
    dd end                                          ; bss_end_addr (no bss)
    dd start                                        ; entry_addr

start:
    lidt [empty_idtr]
fault:
    ud2

empty_idtr:
    dw 0                                            ; limit
    dd 0                                            ; base
end:
