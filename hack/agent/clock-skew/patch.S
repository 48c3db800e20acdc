.intel_syntax noprefix
.globl cg, cg_end, gtod, gtod_end, tm, tm_end
cg:
  mov eax, 228
  syscall
  test rax, rax
  jnz 1f
  cmp edi, 0
  je 2f
  cmp edi, 5
  jne 3f
2:
  movabs rdx, 0x1111111111111111
  cmp [rsi], rdx
  jge 3f
  movabs rdx, 0x2222222222222222
  add [rsi], rdx
3:
  xor eax, eax
1:
  ret
cg_end:
gtod:
  mov eax, 96
  syscall
  test rax, rax
  jnz 1f
  test rdi, rdi
  jz 3f
  movabs rdx, 0x1111111111111111
  cmp [rdi], rdx
  jge 3f
  movabs rdx, 0x2222222222222222
  add [rdi], rdx
3:
  xor eax, eax
1:
  ret
gtod_end:
tm:
  mov rsi, rdi
  xor edi, edi
  mov eax, 201
  syscall
  movabs rdx, 0x1111111111111111
  cmp rax, rdx
  jge 3f
  movabs rdx, 0x2222222222222222
  add rax, rdx
3:
  test rsi, rsi
  jz 1f
  mov [rsi], rax
1:
  ret
tm_end:
