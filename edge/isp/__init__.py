"""ISP address tables: the file format, the lookup index, the origin address policy, the updater."""

ISP_NAMES: tuple[str, ...] = ("chinatelecom", "chinamobile", "chinaunicom", "gwbn")
