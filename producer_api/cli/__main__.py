from producer_api.cli import main

main()
