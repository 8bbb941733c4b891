"""The Lambda handlers. Each module is one function: chat, stats, health.

Deployed, this folder is the functions' code (handler ``chat.lambda_handler`` etc.) and the core
package comes from the layer; locally ``promptcache serve`` imports the same modules.
"""
