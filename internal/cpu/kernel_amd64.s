#include "textflag.h"

// The kernels' shared parts: the arguments into registers (CX k, SI a, R8 lda in bytes, DI the
// panel, DX c, R9 ldc in bytes, R10 3·lda, BX row 4, R11 acc, tested; ROW_ARGS for the one-row
// kernels), and the tiles' accumulators (Z0-Z15 or Y0-Y11, two registers a row) loaded from C,
// zeroed, or stored to C.
#define TILE_ARGS \
	MOVQ k+0(FP), CX; \
	MOVQ a+8(FP), SI; \
	MOVQ lda+16(FP), R8; \
	SHLQ $2, R8; \
	MOVQ b+24(FP), DI; \
	MOVQ c+32(FP), DX; \
	MOVQ ldc+40(FP), R9; \
	SHLQ $2, R9; \
	LEAQ (R8)(R8*2), R10; \
	LEAQ (SI)(R8*4), BX; \
	MOVQ acc+48(FP), R11; \
	TESTQ R11, R11
#define ROW_ARGS \
	MOVQ k+0(FP), CX; \
	MOVQ a+8(FP), SI; \
	MOVQ b+16(FP), DI; \
	MOVQ c+24(FP), DX; \
	MOVQ acc+32(FP), R11; \
	TESTQ R11, R11
#define ACC512_LOAD \
	MOVQ DX, R12; \
	VMOVUPS 0(R12), Z0; \
	VMOVUPS 64(R12), Z1; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Z2; \
	VMOVUPS 64(R12), Z3; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Z4; \
	VMOVUPS 64(R12), Z5; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Z6; \
	VMOVUPS 64(R12), Z7; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Z8; \
	VMOVUPS 64(R12), Z9; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Z10; \
	VMOVUPS 64(R12), Z11; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Z12; \
	VMOVUPS 64(R12), Z13; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Z14; \
	VMOVUPS 64(R12), Z15
#define ACC512_ZERO \
	VPXORD Z0, Z0, Z0; \
	VPXORD Z1, Z1, Z1; \
	VPXORD Z2, Z2, Z2; \
	VPXORD Z3, Z3, Z3; \
	VPXORD Z4, Z4, Z4; \
	VPXORD Z5, Z5, Z5; \
	VPXORD Z6, Z6, Z6; \
	VPXORD Z7, Z7, Z7; \
	VPXORD Z8, Z8, Z8; \
	VPXORD Z9, Z9, Z9; \
	VPXORD Z10, Z10, Z10; \
	VPXORD Z11, Z11, Z11; \
	VPXORD Z12, Z12, Z12; \
	VPXORD Z13, Z13, Z13; \
	VPXORD Z14, Z14, Z14; \
	VPXORD Z15, Z15, Z15
#define ACC512_STORE \
	VMOVUPS Z0, 0(DX); \
	VMOVUPS Z1, 64(DX); \
	ADDQ R9, DX; \
	VMOVUPS Z2, 0(DX); \
	VMOVUPS Z3, 64(DX); \
	ADDQ R9, DX; \
	VMOVUPS Z4, 0(DX); \
	VMOVUPS Z5, 64(DX); \
	ADDQ R9, DX; \
	VMOVUPS Z6, 0(DX); \
	VMOVUPS Z7, 64(DX); \
	ADDQ R9, DX; \
	VMOVUPS Z8, 0(DX); \
	VMOVUPS Z9, 64(DX); \
	ADDQ R9, DX; \
	VMOVUPS Z10, 0(DX); \
	VMOVUPS Z11, 64(DX); \
	ADDQ R9, DX; \
	VMOVUPS Z12, 0(DX); \
	VMOVUPS Z13, 64(DX); \
	ADDQ R9, DX; \
	VMOVUPS Z14, 0(DX); \
	VMOVUPS Z15, 64(DX)
#define ACC2_LOAD \
	MOVQ DX, R12; \
	VMOVUPS 0(R12), Y0; \
	VMOVUPS 32(R12), Y1; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Y2; \
	VMOVUPS 32(R12), Y3; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Y4; \
	VMOVUPS 32(R12), Y5; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Y6; \
	VMOVUPS 32(R12), Y7; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Y8; \
	VMOVUPS 32(R12), Y9; \
	ADDQ R9, R12; \
	VMOVUPS 0(R12), Y10; \
	VMOVUPS 32(R12), Y11
#define ACC2_ZERO \
	VXORPS Y0, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VXORPS Y2, Y2, Y2; \
	VXORPS Y3, Y3, Y3; \
	VXORPS Y4, Y4, Y4; \
	VXORPS Y5, Y5, Y5; \
	VXORPS Y6, Y6, Y6; \
	VXORPS Y7, Y7, Y7; \
	VXORPS Y8, Y8, Y8; \
	VXORPS Y9, Y9, Y9; \
	VXORPS Y10, Y10, Y10; \
	VXORPS Y11, Y11, Y11
#define ACC2_STORE \
	VMOVUPS Y0, 0(DX); \
	VMOVUPS Y1, 32(DX); \
	ADDQ R9, DX; \
	VMOVUPS Y2, 0(DX); \
	VMOVUPS Y3, 32(DX); \
	ADDQ R9, DX; \
	VMOVUPS Y4, 0(DX); \
	VMOVUPS Y5, 32(DX); \
	ADDQ R9, DX; \
	VMOVUPS Y6, 0(DX); \
	VMOVUPS Y7, 32(DX); \
	ADDQ R9, DX; \
	VMOVUPS Y8, 0(DX); \
	VMOVUPS Y9, 32(DX); \
	ADDQ R9, DX; \
	VMOVUPS Y10, 0(DX); \
	VMOVUPS Y11, 32(DX)

// func tileAVX2(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc int)
// C[6][16] = A[6][k] · B[k][16]: row r of A at a + r*lda, the panel B contiguous. With acc != 0 the tile is added to C instead of overwriting it.
TEXT ·tileAVX2(SB), NOSPLIT, $0-56
	TILE_ARGS
	JZ avx2loopzero
	ACC2_LOAD
	JMP avx2loop
avx2loopzero:
	ACC2_ZERO
avx2loop:
	VMOVUPS 0(DI), Y12
	VMOVUPS 32(DI), Y13
	VBROADCASTSS (SI), Y14
	VFMADD231PS Y12, Y14, Y0
	VFMADD231PS Y13, Y14, Y1
	VBROADCASTSS (SI)(R8*1), Y15
	VFMADD231PS Y12, Y15, Y2
	VFMADD231PS Y13, Y15, Y3
	VBROADCASTSS (SI)(R8*2), Y14
	VFMADD231PS Y12, Y14, Y4
	VFMADD231PS Y13, Y14, Y5
	VBROADCASTSS (SI)(R10*1), Y15
	VFMADD231PS Y12, Y15, Y6
	VFMADD231PS Y13, Y15, Y7
	VBROADCASTSS (BX), Y14
	VFMADD231PS Y12, Y14, Y8
	VFMADD231PS Y13, Y14, Y9
	VBROADCASTSS (BX)(R8*1), Y15
	VFMADD231PS Y12, Y15, Y10
	VFMADD231PS Y13, Y15, Y11
	ADDQ $4, SI
	ADDQ $4, BX
	ADDQ $64, DI
	DECQ CX
	JNZ avx2loop
	ACC2_STORE
	VZEROUPPER
	RET

// func tileAVX512(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc int)
// C[8][32] = A[8][k] · B[k][32]. With acc != 0 the tile is added to C instead of overwriting it.
TEXT ·tileAVX512(SB), NOSPLIT, $0-56
	TILE_ARGS
	JZ avx512loopzero
	ACC512_LOAD
	JMP avx512loop
avx512loopzero:
	ACC512_ZERO
avx512loop:
	VMOVUPS 0(DI), Z16
	VMOVUPS 64(DI), Z17
	VBROADCASTSS (SI), Z18
	VFMADD231PS Z16, Z18, Z0
	VFMADD231PS Z17, Z18, Z1
	VBROADCASTSS (SI)(R8*1), Z19
	VFMADD231PS Z16, Z19, Z2
	VFMADD231PS Z17, Z19, Z3
	VBROADCASTSS (SI)(R8*2), Z20
	VFMADD231PS Z16, Z20, Z4
	VFMADD231PS Z17, Z20, Z5
	VBROADCASTSS (SI)(R10*1), Z21
	VFMADD231PS Z16, Z21, Z6
	VFMADD231PS Z17, Z21, Z7
	VBROADCASTSS (BX), Z18
	VFMADD231PS Z16, Z18, Z8
	VFMADD231PS Z17, Z18, Z9
	VBROADCASTSS (BX)(R8*1), Z19
	VFMADD231PS Z16, Z19, Z10
	VFMADD231PS Z17, Z19, Z11
	VBROADCASTSS (BX)(R8*2), Z20
	VFMADD231PS Z16, Z20, Z12
	VFMADD231PS Z17, Z20, Z13
	VBROADCASTSS (BX)(R10*1), Z21
	VFMADD231PS Z16, Z21, Z14
	VFMADD231PS Z17, Z21, Z15
	ADDQ $4, SI
	ADDQ $4, BX
	ADDQ $128, DI
	DECQ CX
	JNZ avx512loop
	ACC512_STORE
	VZEROUPPER
	RET

// func tileAVX2BF16(k int, a *float32, lda int, b *uint16, c *float32, ldc int, acc int)
// tileAVX2 on a panel of bfloat16 weights: each is widened to float32 (its 16 bits moved to
// the top of a zeroed word) as it is loaded.
TEXT ·tileAVX2BF16(SB), NOSPLIT, $0-56
	TILE_ARGS
	JZ avx2bzero
	ACC2_LOAD
	JMP avx2bloop
avx2bzero:
	ACC2_ZERO
avx2bloop:
	VPMOVZXWD 0(DI), Y12
	VPSLLD $16, Y12, Y12
	VPMOVZXWD 16(DI), Y13
	VPSLLD $16, Y13, Y13
	VBROADCASTSS (SI), Y14
	VFMADD231PS Y12, Y14, Y0
	VFMADD231PS Y13, Y14, Y1
	VBROADCASTSS (SI)(R8*1), Y15
	VFMADD231PS Y12, Y15, Y2
	VFMADD231PS Y13, Y15, Y3
	VBROADCASTSS (SI)(R8*2), Y14
	VFMADD231PS Y12, Y14, Y4
	VFMADD231PS Y13, Y14, Y5
	VBROADCASTSS (SI)(R10*1), Y15
	VFMADD231PS Y12, Y15, Y6
	VFMADD231PS Y13, Y15, Y7
	VBROADCASTSS (BX), Y14
	VFMADD231PS Y12, Y14, Y8
	VFMADD231PS Y13, Y14, Y9
	VBROADCASTSS (BX)(R8*1), Y15
	VFMADD231PS Y12, Y15, Y10
	VFMADD231PS Y13, Y15, Y11
	ADDQ $4, SI
	ADDQ $4, BX
	ADDQ $32, DI
	DECQ CX
	JNZ avx2bloop
	ACC2_STORE
	VZEROUPPER
	RET

// func tileAVX512BF16(k int, a *float32, lda int, b *uint16, c *float32, ldc int, acc int)
// tileAVX512 on a panel of bfloat16 weights, widened to float32 as they are loaded.
TEXT ·tileAVX512BF16(SB), NOSPLIT, $0-56
	TILE_ARGS
	JZ avx512bzero
	ACC512_LOAD
	JMP avx512bloop
avx512bzero:
	ACC512_ZERO
avx512bloop:
	VPMOVZXWD 0(DI), Z16
	VPSLLD $16, Z16, Z16
	VPMOVZXWD 32(DI), Z17
	VPSLLD $16, Z17, Z17
	VBROADCASTSS (SI), Z18
	VFMADD231PS Z16, Z18, Z0
	VFMADD231PS Z17, Z18, Z1
	VBROADCASTSS (SI)(R8*1), Z19
	VFMADD231PS Z16, Z19, Z2
	VFMADD231PS Z17, Z19, Z3
	VBROADCASTSS (SI)(R8*2), Z20
	VFMADD231PS Z16, Z20, Z4
	VFMADD231PS Z17, Z20, Z5
	VBROADCASTSS (SI)(R10*1), Z21
	VFMADD231PS Z16, Z21, Z6
	VFMADD231PS Z17, Z21, Z7
	VBROADCASTSS (BX), Z18
	VFMADD231PS Z16, Z18, Z8
	VFMADD231PS Z17, Z18, Z9
	VBROADCASTSS (BX)(R8*1), Z19
	VFMADD231PS Z16, Z19, Z10
	VFMADD231PS Z17, Z19, Z11
	VBROADCASTSS (BX)(R8*2), Z20
	VFMADD231PS Z16, Z20, Z12
	VFMADD231PS Z17, Z20, Z13
	VBROADCASTSS (BX)(R10*1), Z21
	VFMADD231PS Z16, Z21, Z14
	VFMADD231PS Z17, Z21, Z15
	ADDQ $4, SI
	ADDQ $4, BX
	ADDQ $64, DI
	DECQ CX
	JNZ avx512bloop
	ACC512_STORE
	VZEROUPPER
	RET

// func rowAVX512(k int, a *float32, b *float32, c *float32, acc int)
// One row of tileAVX512: C[32] = A[k] · B[k][32] (or added to C), with the same operations in
// the same order as the tile's first row, so a row computes alone what it computes in a tile.
// Decoding one sequence multiplies one row: the tile would do eight rows' work for it.
TEXT ·rowAVX512(SB), NOSPLIT, $0-40
	ROW_ARGS
	JZ r512zero
	VMOVUPS 0(DX), Z0
	VMOVUPS 64(DX), Z1
	JMP r512loop
r512zero:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
r512loop:
	VMOVUPS 0(DI), Z16
	VMOVUPS 64(DI), Z17
	VBROADCASTSS (SI), Z18
	VFMADD231PS Z16, Z18, Z0
	VFMADD231PS Z17, Z18, Z1
	ADDQ $4, SI
	ADDQ $128, DI
	DECQ CX
	JNZ r512loop
	VMOVUPS Z0, 0(DX)
	VMOVUPS Z1, 64(DX)
	VZEROUPPER
	RET

// func rowAVX512BF16(k int, a *float32, b *uint16, c *float32, acc int)
// rowAVX512 on a bfloat16 panel.
TEXT ·rowAVX512BF16(SB), NOSPLIT, $0-40
	ROW_ARGS
	JZ r512bzero
	VMOVUPS 0(DX), Z0
	VMOVUPS 64(DX), Z1
	JMP r512bloop
r512bzero:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
r512bloop:
	VPMOVZXWD 0(DI), Z16
	VPSLLD $16, Z16, Z16
	VPMOVZXWD 32(DI), Z17
	VPSLLD $16, Z17, Z17
	VBROADCASTSS (SI), Z18
	VFMADD231PS Z16, Z18, Z0
	VFMADD231PS Z17, Z18, Z1
	ADDQ $4, SI
	ADDQ $64, DI
	DECQ CX
	JNZ r512bloop
	VMOVUPS Z0, 0(DX)
	VMOVUPS Z1, 64(DX)
	VZEROUPPER
	RET

// func rowAVX2(k int, a *float32, b *float32, c *float32, acc int)
// One row of tileAVX2, in the same order as the tile's first row.
TEXT ·rowAVX2(SB), NOSPLIT, $0-40
	ROW_ARGS
	JZ r2zero
	VMOVUPS 0(DX), Y0
	VMOVUPS 32(DX), Y1
	JMP r2loop
r2zero:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
r2loop:
	VMOVUPS 0(DI), Y12
	VMOVUPS 32(DI), Y13
	VBROADCASTSS (SI), Y14
	VFMADD231PS Y12, Y14, Y0
	VFMADD231PS Y13, Y14, Y1
	ADDQ $4, SI
	ADDQ $64, DI
	DECQ CX
	JNZ r2loop
	VMOVUPS Y0, 0(DX)
	VMOVUPS Y1, 32(DX)
	VZEROUPPER
	RET

// func rowAVX2BF16(k int, a *float32, b *uint16, c *float32, acc int)
// rowAVX2 on a bfloat16 panel.
TEXT ·rowAVX2BF16(SB), NOSPLIT, $0-40
	ROW_ARGS
	JZ r2bzero
	VMOVUPS 0(DX), Y0
	VMOVUPS 32(DX), Y1
	JMP r2bloop
r2bzero:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
r2bloop:
	VPMOVZXWD 0(DI), Y12
	VPSLLD $16, Y12, Y12
	VPMOVZXWD 16(DI), Y13
	VPSLLD $16, Y13, Y13
	VBROADCASTSS (SI), Y14
	VFMADD231PS Y12, Y14, Y0
	VFMADD231PS Y13, Y14, Y1
	ADDQ $4, SI
	ADDQ $32, DI
	DECQ CX
	JNZ r2bloop
	VMOVUPS Y0, 0(DX)
	VMOVUPS Y1, 32(DX)
	VZEROUPPER
	RET

// The AVX-512 BF16 kernels have no mnemonics in Go's assembler: each VDPBF16PS (dst += the
// dot products of src1's and src2's bf16 pairs, lane by lane) is spelled out in its EVEX bytes
// (62, P0, P1, 40: 512 bits, 52, ModRM), named in its comment in Go's operand order (src2,
// src1, dst). P0 holds the high bits of dst and src2, P1 src1, ModRM the low bits of dst and src2.
#define VDPBF16PS_Z(p0, p1, modrm) BYTE $0x62; BYTE $p0; BYTE $p1; BYTE $0x40; BYTE $0x52; BYTE $modrm
// DP_ROW is one row's step: its pair broadcast into zb, multiplied into its two accumulators.
#define DP_ROW(src, zb, p0, p1, m0, m1) VBROADCASTSS src, zb; VDPBF16PS_Z(p0, p1, m0); VDPBF16PS_Z(p0, p1, m1)

// func tileAVX512DP(k2 int, a *uint32, lda int, b *uint16, c *float32, ldc int, acc int)
// tileAVX512 on bf16 pairs: A's rows hold k2 pairs of bf16 (lda pairs apart), the panel
// [k2][32][2]; each step broadcasts one pair of each of the 8 rows and takes the pairs of
// 32 columns from two registers.
TEXT ·tileAVX512DP(SB), NOSPLIT, $0-56
	TILE_ARGS
	JZ dpzero
	ACC512_LOAD
	JMP dploop
dpzero:
	ACC512_ZERO
dploop:
	VMOVUPS 0(DI), Z16
	VMOVUPS 64(DI), Z17
	DP_ROW((SI), Z18, 0xb2, 0x6e, 0xc0, 0xc9) // Z18·Z16 into Z0, Z18·Z17 into Z1
	DP_ROW((SI)(R8*1), Z19, 0xb2, 0x66, 0xd0, 0xd9) // Z19·Z16 into Z2, Z19·Z17 into Z3
	DP_ROW((SI)(R8*2), Z20, 0xb2, 0x5e, 0xe0, 0xe9) // Z20·Z16 into Z4, Z20·Z17 into Z5
	DP_ROW((SI)(R10*1), Z21, 0xb2, 0x56, 0xf0, 0xf9) // Z21·Z16 into Z6, Z21·Z17 into Z7
	DP_ROW((BX), Z18, 0x32, 0x6e, 0xc0, 0xc9) // Z18·Z16 into Z8, Z18·Z17 into Z9
	DP_ROW((BX)(R8*1), Z19, 0x32, 0x66, 0xd0, 0xd9) // Z19·Z16 into Z10, Z19·Z17 into Z11
	DP_ROW((BX)(R8*2), Z20, 0x32, 0x5e, 0xe0, 0xe9) // Z20·Z16 into Z12, Z20·Z17 into Z13
	DP_ROW((BX)(R10*1), Z21, 0x32, 0x56, 0xf0, 0xf9) // Z21·Z16 into Z14, Z21·Z17 into Z15
	ADDQ $4, SI
	ADDQ $4, BX
	ADDQ $128, DI
	DECQ CX
	JNZ dploop
	ACC512_STORE
	VZEROUPPER
	RET

// func rowAVX512DP(k2 int, a *uint32, b *uint16, c *float32, acc int)
// One row of tileAVX512DP, in the same order as the tile's first row.
TEXT ·rowAVX512DP(SB), NOSPLIT, $0-40
	ROW_ARGS
	JZ rdpzero
	VMOVUPS 0(DX), Z0
	VMOVUPS 64(DX), Z1
	JMP rdploop
rdpzero:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
rdploop:
	VMOVUPS 0(DI), Z16
	VMOVUPS 64(DI), Z17
	DP_ROW((SI), Z18, 0xb2, 0x6e, 0xc0, 0xc9) // Z18·Z16 into Z0, Z18·Z17 into Z1
	ADDQ $4, SI
	ADDQ $128, DI
	DECQ CX
	JNZ rdploop
	VMOVUPS Z0, 0(DX)
	VMOVUPS Z1, 64(DX)
	VZEROUPPER
	RET
