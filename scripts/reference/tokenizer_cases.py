"""The strings whose tokenization is recorded from llama.cpp (shared by the record scripts).

Each case is (text, add_special, parse_special).
"""

TEXTS = [
    "Hello world",
    "Hello  world",
    " Hello",
    "Hello\n\nworld",
    "naïve café 🤖 日本語",
    "\tx\t\ty",
    "",
    "a",
    "    def f(x):\n        return x",
    "é́ 😀😀",
    " ",
    "  ",
    "   ",
    "          ",
    "\n",
    "\n\n\n",
    "\r\n",
    "line one\nline two\r\nline three\n",
    "\t",
    "a\tb\t\tc\t\t\td",
    "Hello, World! HELLO world. hello",
    "123456789",
    "3.14159 2,718 1e-9 0x1F -42 +7",
    "In 2024, 1,000,000 people paid $3.50 each (about 12%).",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    'for (int i = 0; i < 10; ++i) { printf("%d\\n", i); }',
    '{"key": [1, 2, 3], "ok": true, "nested": {"a": null}}',
    "👋🌍",
    "👨‍👩‍👧‍👦 family",
    "🦀🦀🦀",
    "你好，世界！",
    "こんにちは世界",
    "한국어 텍스트",
    "Привет, мир",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Ελληνικά γράμματα",
    "a" * 100,
    "=" * 64,
    "!!!!!!!!!!!!!!!!",
    " " * 40 + "x",
    "\n" * 40,
    "naïve coöperation façade",
    "Ünïcödé ÀÉÎÕÜ ß",
    "e\u0301 combining",
    "zero\u200bwidth",
    "non\u00a0breaking",
    "ﬁ ligature",
    "  leading spaces",
    "trailing spaces  ",
    " Hello world ",
    "<html><body><p>Hi</p></body></html>",
    "**bold** _italic_ `code`",
    "https://example.com/path?q=1&r=2#frag",
    "user@example.com",
    "don't won't it's I'm we'll they've she'd DON'T",
    "The quick brown fox jumps over the lazy dog.",
]

SPECIAL_TEXTS = [
    "<start_of_turn>user\nHi<end_of_turn>\n",
    "<start_of_turn>model\nSure!<end_of_turn>",
    "<bos>hello",
    "<eos>",
    "<unused0> text",
    "<pad><mask>",
    "<|begin_of_text|>Hi<|eot_id|>",
    "plain <|end_of_text|> tail",
]


def cases():
    out = []
    for text in TEXTS:
        out.append((text, True, False))
    for text in ["Hello world", "a", "", "\n\n", "  leading spaces"]:
        out.append((text, False, False))
    for text in SPECIAL_TEXTS:
        out.append((text, True, True))
        out.append((text, True, False))
    return out
