import Testing

@Test("placeholder for GGUF") func placeholder() { #expect(1 + 1 == 2) }
