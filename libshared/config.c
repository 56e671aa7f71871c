/* placeholder */
int config_placeholder_unused;
