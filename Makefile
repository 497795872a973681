# Aliases for ./dev (which needs no make). See README.md.
.PHONY: up down destroy test bench
up:      ; ./dev up
down:    ; ./dev down
destroy: ; ./dev destroy
test:    ; ./dev test
bench:   ; ./dev bench
