; A process with many page-table entries, for timing ptdump against its size.
;
;   pages [N]        (N decimal, default 100000)
;
; It maps 2*N anonymous pages, asks Linux for no transparent huge pages
; there (madvise MADV_NOHUGEPAGE), and writes one byte to every other page,
; so that N 4 KiB pages get a frame of their own and a PTE each, and no two
; of them are neighbours: every touched page is a range of its own in a
; dump, the most text and JSON a dump of N entries can make.  Then it says
;
;   PAGES READY <N> 0x<first-va> 0x<stride>
;
; on stdout (the serial console when it is /init's child) and spins in ring
; 3 (`jmp $`), so a debugger's interrupt lands at CPL 3 in this process,
; with its CR3.  On a failed system call it says "PAGES FAILED <call>
; <-errno>" and exits 1.
;
;   nasm -f elf64 -o pages.o pages.asm && ld -static -o pages pages.o
bits 64

SYS_WRITE   equ 1
SYS_MMAP    equ 9
SYS_MADVISE equ 28
SYS_EXIT    equ 60

PROT_RW          equ 0x3          ; PROT_READ | PROT_WRITE
MAP_PRIVATE_ANON equ 0x22         ; MAP_PRIVATE | MAP_ANONYMOUS
MADV_NOHUGEPAGE  equ 15
PAGE             equ 4096
STRIDE           equ 2 * PAGE     ; a touched page, then an untouched one
DEFAULT_PAGES    equ 100000

section .text
global _start
_start:
    mov r12, DEFAULT_PAGES
    cmp qword [rsp], 2            ; argc: is there an N?
    jb .mapped_size
    mov rsi, [rsp + 16]           ; argv[1]
    call parse_decimal
    test rax, rax
    jz .mapped_size               ; not a number, or 0: the default
    mov r12, rax
.mapped_size:
    mov rsi, r12
    imul rsi, rsi, STRIDE         ; length: 2*N pages
    mov r13, rsi
    xor edi, edi                  ; mmap(NULL, len, RW, PRIVATE|ANON, -1, 0)
    mov edx, PROT_RW
    mov r10d, MAP_PRIVATE_ANON
    mov r8, -1
    xor r9d, r9d
    mov eax, SYS_MMAP
    syscall
    lea rbx, [rel name_mmap]
    cmp rax, -4095
    jae failed
    mov r14, rax                  ; the first VA
    mov rdi, rax                  ; madvise(va, len, MADV_NOHUGEPAGE)
    mov rsi, r13
    mov edx, MADV_NOHUGEPAGE
    mov eax, SYS_MADVISE
    syscall
    lea rbx, [rel name_madvise]
    test rax, rax
    jnz failed
    mov rdi, r14                  ; touch: one write per page, every other page
    mov rcx, r12
.touch:
    mov byte [rdi], 1
    add rdi, STRIDE
    dec rcx
    jnz .touch

    lea rdi, [rel line]           ; "PAGES READY <N> 0x<va> 0x<stride>\n"
    lea rsi, [rel text_ready]
    call append_text
    mov rax, r12
    call append_decimal
    mov byte [rdi], ' '
    inc rdi
    mov rax, r14
    call append_hex
    mov byte [rdi], ' '
    inc rdi
    mov rax, STRIDE
    call append_hex
    mov byte [rdi], 10
    inc rdi
    call write_line
spin:
    jmp spin                      ; ring 3, forever: where the debugger stops it

; A system call failed: "PAGES FAILED <name> <rax as signed decimal>", exit 1.
failed:
    mov r15, rax
    lea rdi, [rel line]
    lea rsi, [rel text_failed]
    call append_text
    mov rsi, rbx
    call append_text
    mov byte [rdi], ' '
    inc rdi
    mov byte [rdi], '-'
    inc rdi
    mov rax, r15
    neg rax
    call append_decimal
    mov byte [rdi], 10
    inc rdi
    call write_line
    mov eax, SYS_EXIT
    mov edi, 1
    syscall

; rsi: a NUL-terminated decimal string -> rax (0 if it holds a non-digit).
parse_decimal:
    xor eax, eax
.next:
    movzx ecx, byte [rsi]
    test ecx, ecx
    jz .done
    sub ecx, '0'
    cmp ecx, 9
    ja .bad
    imul rax, rax, 10
    add rax, rcx
    inc rsi
    jmp .next
.bad:
    xor eax, eax
.done:
    ret

; Copy the NUL-terminated string at rsi to rdi (rdi left after it).
append_text:
    mov al, [rsi]
    test al, al
    jz .done
    mov [rdi], al
    inc rdi
    inc rsi
    jmp append_text
.done:
    ret

; rax in decimal at rdi (rdi left after it).
append_decimal:
    lea r8, [rel digits + 32]
    mov r9, r8
    mov r10, 10
.digit:
    xor edx, edx
    div r10
    add dl, '0'
    dec r9
    mov [r9], dl
    test rax, rax
    jnz .digit
    jmp copy_digits

; rax as 0x and lowercase hex at rdi (rdi left after it).
append_hex:
    mov word [rdi], '0x'
    add rdi, 2
    lea r8, [rel digits + 32]
    mov r9, r8
.digit:
    mov edx, eax
    and edx, 0xf
    lea rcx, [rel hex_digits]
    mov dl, [rcx + rdx]
    dec r9
    mov [r9], dl
    shr rax, 4
    jnz .digit
copy_digits:                      ; [r9, r8) to rdi
    mov al, [r9]
    mov [rdi], al
    inc rdi
    inc r9
    cmp r9, r8
    jb copy_digits
    ret

; write(1, line, rdi - line)
write_line:
    lea rsi, [rel line]
    mov rdx, rdi
    sub rdx, rsi
    mov edi, 1
    mov eax, SYS_WRITE
    syscall
    ret

section .rodata
text_ready:   db "PAGES READY ", 0
text_failed:  db "PAGES FAILED ", 0
name_mmap:    db "mmap", 0
name_madvise: db "madvise", 0
hex_digits:   db "0123456789abcdef"

section .bss
digits: resb 32
line:   resb 128
