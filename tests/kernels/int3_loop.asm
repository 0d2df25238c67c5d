; A kernel that does nothing but take interrupts: `int3` in a loop, through
; a 32-bit interrupt gate whose handler counts and returns.  It writes a '.'
; to COM1 every 65536 interrupts, so a benchmark reads the rate from the
; serial log (scripts/bench-int-log: what QEMU's -d int costs per event).
;
;   nasm -f bin -o int3_loop.bin int3_loop.asm && qemu-system-x86_64 -kernel int3_loop.bin
;
; Multiboot v1 with the a.out kludge, as empty_idt.asm; the loader leaves a
; flat 32-bit code segment in CS (its selector is read, not assumed).
bits 32
org 0x100000

MULTIBOOT_MAGIC equ 0x1BADB002
MULTIBOOT_AOUT_KLUDGE equ 1 << 16
COM1 equ 0x3F8
BP_VECTOR equ 3
GATE_INTERRUPT32 equ 0x8E       ; P=1, DPL 0, type 0xE (Intel SDM Vol. 3A 6.11, figure 6-2)

header:
    dd MULTIBOOT_MAGIC
    dd MULTIBOOT_AOUT_KLUDGE
    dd -(MULTIBOOT_MAGIC + MULTIBOOT_AOUT_KLUDGE)
    dd header, header, end, end, start

start:
    mov esp, stack_top
    ; The #BP gate: offset[15:0], selector, attributes, offset[31:16].
    mov eax, bp_handler
    mov [idt + BP_VECTOR * 8], ax
    mov word [idt + BP_VECTOR * 8 + 2], cs
    mov byte [idt + BP_VECTOR * 8 + 5], GATE_INTERRUPT32
    shr eax, 16
    mov [idt + BP_VECTOR * 8 + 6], ax
    lidt [idtr]
.loop:
    int3
    jmp .loop

bp_handler:
    inc dword [count]
    test dword [count], 0xFFFF
    jnz .done
    push eax
    push edx
    mov dx, COM1
    mov al, '.'
    out dx, al
    pop edx
    pop eax
.done:
    iret

align 8
idt:
    times 4 dq 0
idtr:
    dw 4 * 8 - 1
    dd idt
count:
    dd 0
    times 4096 db 0
stack_top:
end:
