; An /init for Linux that says one line and then writes to address 0: the
; user-mode #PF (error 0x6: write, user, not present; CR2 = 0) that no kernel
; resumes.  Linux kills it with SIGSEGV, and since it is init, panics:
; "Attempted to kill init! exitcode=0x0000000b".
;
;   nasm -f elf64 -o segv_init.o segv_init.asm && ld -static -o init segv_init.o
bits 64
section .text
global _start
_start:
    mov eax, 1                  ; write(1, message, length)
    mov edi, 1
    lea rsi, [rel message]
    mov edx, message_end - message
    syscall
fault:
    mov dword [0], 1            ; the fault: nothing is mapped at 0
    mov eax, 60                 ; exit(0), never reached
    xor edi, edi
    syscall

section .rodata
message: db "segv-init: writing to address 0", 10
message_end:
