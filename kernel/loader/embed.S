/*
 * kernel.elf (without debug sections) inside the loader, so BOOTX64.EFI is
 * the one file every scenario boots.  gnu-efi's linker script gathers
 * .rodata* into the image's .data section.
 */
	.section .rodata.kernel_image, "a"
	.balign 16
	.globl kernel_image_start
	.globl kernel_image_end
kernel_image_start:
	.incbin KERNEL_IMAGE
kernel_image_end:
	.section .note.GNU-stack, "", @progbits
