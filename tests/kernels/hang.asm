; A Multiboot v1 kernel that prints one line on COM1 and then hangs, for
; triage's hang report.  Built flat (nasm -f bin): the a.out kludge fields
; of the header (flags bit 16) tell the loader where it goes, so QEMU's
; -kernel loads it without an ELF (Multiboot Specification 0.6.96, 3.1).
; The loader enters it in 32-bit protected mode, paging off, IF=0 (3.2).
;
;   nasm -f bin -o hang-hlt.bin hang.asm            cli; hlt forever (halted)
;   nasm -f bin -DSPIN -o hang-spin.bin hang.asm    jmp $ forever (spinning)

bits 32
org 0x100000

MULTIBOOT_MAGIC equ 0x1BADB002
MULTIBOOT_AOUT_KLUDGE equ 1 << 16
COM1 equ 0x3f8

header:
        dd MULTIBOOT_MAGIC
        dd MULTIBOOT_AOUT_KLUDGE
        dd -(MULTIBOOT_MAGIC + MULTIBOOT_AOUT_KLUDGE)
        dd header               ; header_addr
        dd header               ; load_addr
        dd image_end            ; load_end_addr
        dd image_end            ; bss_end_addr
        dd start                ; entry_addr

start:
        mov esi, banner
        mov dx, COM1
.print: mov al, [esi]
        test al, al
        jz .hang
        out dx, al              ; QEMU's UART needs no wait for THR empty
        inc esi
        jmp .print

.hang:
%ifdef SPIN
        global spin
spin:   jmp spin
%else
        cli
halt:   hlt
        jmp halt
%endif

%ifdef SPIN
banner: db "hang: spinning in jmp $", 13, 10, 0
%else
banner: db "hang: halting with interrupts off", 13, 10, 0
%endif
image_end:
