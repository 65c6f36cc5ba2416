#!/usr/bin/env python3
"""Outside reference for the tokenizer: compare ids produced by `moessm tokenizer encode` with the
Hugging Face `tokenizers` library (Rust) on the same text, and check decode round trips.

usage: tools/tokenizer_check.py --tokenizer tokenizer.json --text FILE --ids IDS_FILE
IDS_FILE holds moessm's ids for FILE (space-separated, one line), made where moessm's tokenizer
is built (it needs PCRE2), e.g.  moessm tokenizer encode --tokenizer T --file FILE > IDS_FILE
Exit status 0 when the ids are identical.
"""
import argparse
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--ids", required=True)
    args = ap.parse_args()
    from tokenizers import Tokenizer
    import tokenizers

    tok = Tokenizer.from_file(args.tokenizer)
    text = open(args.text, encoding="utf-8").read()
    ref = tok.encode(text, add_special_tokens=False).ids
    ours = [int(x) for x in open(args.ids).read().split()]
    same = ref == ours
    first = next((i for i, (a, b) in enumerate(zip(ref, ours)) if a != b), min(len(ref), len(ours)))
    back = tok.decode(ours, skip_special_tokens=False) == text
    print(f"tokenizers {tokenizers.__version__}  {args.tokenizer}  {args.text}: {len(ref)} ids (ours {len(ours)})  "
          f"{'IDENTICAL' if same else f'DIFFER at {first}'}  round trip {'ok' if back else 'FAILED'}")
    return 0 if same and back else 1


if __name__ == "__main__":
    sys.exit(main())
