import Testing

@Test("placeholder for Tokenizers") func placeholder() { #expect(1 + 1 == 2) }
