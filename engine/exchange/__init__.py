"""Exchange connectors. One sub-package per exchange (only BingX USDT-M perpetuals today)."""
