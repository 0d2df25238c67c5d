/*
 * kernel.elf (without debug sections) inside the loader, so BOOTX64.EFI is
 * the one file every scenario boots.  gnu-efi's linker script puts
 * .rodata* into .data (3.0.15) or a .rodata section of its own (3.0.18);
 * efi-image copies whichever there is, and checks the kernel is in the image.
 */
	.section .rodata.kernel_image, "a"
	.balign 16
	.globl kernel_image_start
	.globl kernel_image_end
kernel_image_start:
	.incbin KERNEL_IMAGE
kernel_image_end:
	.section .note.GNU-stack, "", @progbits
