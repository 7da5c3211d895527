"""`python -m kitchenware.training.demo OUT`: generate the synthetic dataset."""

from kitchenware.training.demo.generator import main

raise SystemExit(main())
