// Packed documents for training (trainer option pack_documents): the document index seq_idx of
// every token of rows cut from a token stream in which `moessm prepare` joined the documents
// with the tokenizer's end-of-text id. The separator STARTS the next document (it is that
// document's beginning-of-text): the token before it predicts it within the document it ends,
// and the separator predicts the next document's first token from no earlier context.
//   seq_idx[b,0] = 0,  seq_idx[b,t] = seq_idx[b,t-1] + (ids[b,t] == sep)   (t > 0)
// so a separator at t = 0 starts nothing new (position 0 is never a document start: the row has
// no earlier token; ops/op_common.h), one at t = T-1 makes a last document of one token, a
// document longer than the row gives the whole row one index, and consecutive separators give
// one-token documents. The layers read it through Model::loss (ops/op_common.h has the rule).
// Shapes: ids, seq_idx [B,T] row-major int32.
#pragma once
#include <cstdint>

namespace moessm {

// Fills seq_idx from ids; returns the number of document starts found (t > 0 separators).
int64_t document_index_from_separators(int32_t* seq_idx, const int32_t* ids, int64_t B, int64_t T, int32_t sep);

}  // namespace moessm
