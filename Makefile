# Shortcuts for the two quick-start scripts.
.PHONY: run test
run:
	./scripts/run
test:
	./scripts/test
